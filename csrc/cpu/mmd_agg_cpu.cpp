// Fused CPU kernels for the aggregated MMD tests. See mmd_agg_cpu.h for the maths and the contract.
//
// This file is compiled once per instruction-set path, through csrc/cpu/isa_<name>.cpp (as
// mmd_perm_cpu.cpp), and uses the permutation kernels' pooled layouts and look-up shapes
// (cpu/perm_layout.h) and their k(r) (cpu/kernel_math.h). Everything here lives in
// wae_fast::cpu::WAE_FAST_ISA and, apart from the path's table kAggPath, has internal linkage (see
// cpu/simd.h).
//
// Design: the permutation kernels with a loop over the kernels inside each tile.
//   * A task owns AGG_TASK_ROWS rows; each row block sweeps the columns j > i in tiles:
//       stage 1  r_ij for the tile, direct differences, once: shared by the S kernels
//       per kernel s (kernel outer, labellings inner: one kernel's 16 KiB of tables and the tile's
//       label bytes stay in the L1 cache together):
//       stage 2  K[j] = k_s(r_ij), 0 where j ≤ i or j ≥ N; its row sums T_i and sums of squares; the
//                tile's subset-sum tables (as tile_tables / perm_task_x16's stage 2)
//       stage 3  the table look-ups of every labelling (as tile_products / perm_task_x16's stage 3)
//                into kernel s's accumulators R_pi
//     and at the end of the row block, per kernel, the permutation kernels' combination:
//       within[s][p] += 2 Σ_i u_pi R_pi,  member_rows[s][p] += Σ_i (R_pi + u_pi T_i),
//       total[s] += 2 Σ_i T_i,  squares[s] += 2 Σ_i Σ_{j>i} K_ij².
//   * With AVX-512, float inputs take the transposed layout of perm_task_x16 (16 labellings per vector,
//     one vpermps per 16 labellings × 4 columns).
//   * Tasks go to AGG_SLOTS result slots (task t to slot t % AGG_SLOTS, in increasing order); workers
//     pull whole slots from an atomic counter and the slots are summed in order: the result does not
//     depend on the thread count, and the slots take O(AGG_SLOTS·S·P) memory whatever N.
//   * z is centred and rescaled by 2^−E, the bandwidths by 2^−2E (cpu/rescale.h, as the permutation
//     kernels). NaN/Inf anywhere in z, or no E that fits: every output NaN.
#ifndef WAE_FAST_ISA
#error "mmd_agg_cpu.cpp is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include "cpu/mmd_agg_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu/isa_info.h"
#include "cpu/kernel_math.h"
#include "cpu/mmd_cpu.h"
#include "cpu/parallel.h"
#include "cpu/perm_layout.h"
#include "cpu/rescale.h"
#include "cpu/simd.h"

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

constexpr int AGG_TASK_ROWS = 256;  // rows per task: a multiple of every vector width, of 8 and of X16_ROWS
static_assert(AGG_TASK_ROWS % 64 == 0 && AGG_TASK_ROWS % X16_ROWS == 0, "task size");
// Result slots: task t adds to slot t % AGG_SLOTS, the slot's tasks in increasing order; a worker takes
// a whole slot. Memory AGG_SLOTS·S·P, whatever N; the sums do not depend on the thread count.
constexpr int AGG_SLOTS = 64;

template <typename T>
struct AggScratch {
  AlignedBuf<T> rt;         // stage 1: the tile's distances, generic [TILE][W], x16 [X16_ROWS][X16_TILE]
  AlignedBuf<T> kt;         // stage 2: one kernel's values, the same layout
  AlignedBuf<T> tables;     // stage 2: subset sums, PermScratch's layouts
  AlignedBuf<double> acc;   // stage 3: R of every kernel, generic [S][P][W], x16 [S][X16_ROWS][P16]
  AlignedBuf<double> rows;  // [2][S][lanes]: the row block's T_i and Σ_j K_ij², per kernel
  AggScratch(int64_t kernels, int64_t labellings, int64_t lanes_p, bool x16)
      : rt(x16 ? X16_ROWS * X16_TILE : PermShape<T>::TILE * PermShape<T>::W),
        kt(x16 ? X16_ROWS * X16_TILE : PermShape<T>::TILE * PermShape<T>::W),
        tables(x16 ? X16_ROWS * X16_GROUPS * 16 : PermShape<T>::GROUPS * 16 * PermShape<T>::W),
        acc(static_cast<size_t>(kernels * (x16 ? X16_ROWS * lanes_p : labellings * PermShape<T>::W))),
        rows(static_cast<size_t>(2 * kernels * (x16 ? X16_ROWS : PermShape<T>::W))) {}
};

template <typename T>
struct AggWork {
  const AggProblem* in = nullptr;
  const Pooled<T>* pooled = nullptr;
  const Scales<T>* scales = nullptr;  // [S]: one scale each
  const PermTask* tasks = nullptr;
  size_t num_tasks = 0;
  size_t num_slots = 0;
  AggScratch<T>* const* scratch = nullptr;  // one per worker
  double* within = nullptr;        // [num_slots][S][P]
  double* member_rows = nullptr;   // [num_slots][S][P]
  double* total = nullptr;         // [num_slots][S]
  double* squares = nullptr;       // [num_slots][S]
  const uint8_t* labels_t = nullptr;  // the AVX-512 float kernel: perm's transposed labels
  int64_t lanes_p = 0;
  std::atomic<size_t> next{0};
};

// ---------------------------------------------------------------------------------------------
// The generic kernel: W rows in the lanes.

// Stage 1: rt[jj] = r(rows ib … ib + W − 1, column j0 + jj) (0 past N).
template <typename T>
static inline void agg_tile_distances(const Pooled<T>& Z, int64_t ib, int64_t j0, T* rt) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  constexpr int W = Sh::W;
  const int64_t N = Z.rows, d = Z.d;
  const T* panel = Z.soa.ptr + (ib / W) * d * W;  // [d][W] the row block
  for (int jj = 0; jj < Sh::TILE; jj += 4) {
    V r[4];
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + jj + c;
      r[c] = splat<V>(T(0));
      if (j >= N) continue;
      const T* zj = Z.rp.ptr + j * d;
#pragma GCC unroll 8
      for (int64_t k = 0; k < d; ++k) {
        V df = loadv<V>(panel + k * W) - zj[k];
        r[c] += df * df;
      }
    }
    for (int c = 0; c < 4; ++c) storev(rt + (jj + c) * W, r[c]);
  }
}

// Stage 2 for one kernel: its values (0 where j ≤ i or j ≥ N) and subset-sum tables; adds the tile's
// row sums and sums of squares to row_sum / row_sq (the row block's, in double).
template <typename T, int KER>
static inline void agg_tile_tables(const Scales<T>& scales, int64_t N, int64_t ib, int64_t j0, const T* rt, T* kt,
                                   T* tab, double* row_sum, double* row_sq) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  using I = typename Sh::I;
  using Lane = typename Sh::Lane;
  constexpr int W = Sh::W;
  I row_index;
  for (int l = 0; l < W; ++l) row_index[l] = static_cast<Lane>(ib + l);
  V sum = splat<V>(T(0)), sq = splat<V>(T(0));
  for (int jj = 0; jj < Sh::TILE; jj += 4) {
    V r[4], kv[4], wv[4];
    for (int c = 0; c < 4; ++c) r[c] = loadv<V>(rt + (jj + c) * W);
    kernel_eval<T, KER, 4>(scales, r, kv, wv);
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + jj + c;
      const I keep = row_index < static_cast<Lane>(j < N ? j : 0);  // j > i, and no column past N
      kv[c] = keep ? kv[c] : splat<V>(T(0));
      sum += kv[c];
      sq += kv[c] * kv[c];
      storev(kt + (jj + c) * W, kv[c]);
    }
  }
  for (int l = 0; l < W; ++l) {
    row_sum[l] += static_cast<double>(sum[l]);
    row_sq[l] += static_cast<double>(sq[l]);
  }
  for (int q = 0; q < Sh::GROUPS; ++q) {  // S[s] = Σ_{b ∈ s} K[4q + b], bit b of s for column 4q + b
    const V k0 = loadv<V>(kt + (4 * q + 0) * W), k1 = loadv<V>(kt + (4 * q + 1) * W);
    const V k2 = loadv<V>(kt + (4 * q + 2) * W), k3 = loadv<V>(kt + (4 * q + 3) * W);
    V s[16];
    s[0] = splat<V>(T(0));
    s[1] = k0;
    s[2] = k1;
    s[3] = k0 + k1;
    for (int e = 0; e < 4; ++e) s[4 + e] = k2 + s[e];
    for (int e = 0; e < 8; ++e) s[8 + e] = k3 + s[e];
    for (int e = 0; e < 16; ++e) storev(tab + (q * 16 + e) * W, s[e]);
  }
}

// Stage 3 for one kernel and one tile: acc[p] += Σ_{j in tile} K[j]·u_pj for every labelling p.
template <typename T>
static inline void agg_tile_products(const AggProblem& in, int64_t j0, const T* tab, double* acc) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  constexpr int W = Sh::W;
  const int64_t byte0 = j0 / 8;
  const int64_t avail = std::min<int64_t>(Sh::TILE / 8, in.label_bytes - byte0);  // label bytes in range
  for (int64_t p = 0; p < in.labellings; ++p) {
    const uint8_t* lab = in.labels + p * in.label_bytes + byte0;
    uint64_t words[Sh::WORDS];
    if (avail == Sh::TILE / 8) {
      std::memcpy(words, lab, sizeof(words));
    } else {
      std::memset(words, 0, sizeof(words));
      std::memcpy(words, lab, static_cast<size_t>(avail));
    }
    V part[4] = {splat<V>(T(0)), splat<V>(T(0)), splat<V>(T(0)), splat<V>(T(0))};
#pragma GCC unroll 64
    for (int q = 0; q < Sh::GROUPS; ++q) {
      const unsigned nibble = static_cast<unsigned>(words[q / 16] >> (4 * (q % 16))) & 15u;
      part[q % 4] += loadv<V>(tab + (q * 16 + nibble) * W);
    }
    const V sum = (part[0] + part[1]) + (part[2] + part[3]);
    double* out = acc + p * W;
    for (int l = 0; l < W; ++l) out[l] += static_cast<double>(sum[l]);
  }
}

// Adds task t's shares to within, member_rows ([S][P]), total and squares ([S]).
template <typename T>
static void agg_task(const AggWork<T>& work, const PermTask& t, AggScratch<T>& sc, double* within,
                     double* member_rows, double* total, double* squares) {
  using Sh = PermShape<T>;
  constexpr int W = Sh::W;
  const AggProblem& in = *work.in;
  const int64_t N = work.pooled->rows, P = in.labellings, S = in.num_kernels;
  for (int64_t ib = t.i0; ib < t.i1; ib += W) {
    std::memset(sc.acc.ptr, 0, sizeof(double) * static_cast<size_t>(S * P * W));
    std::memset(sc.rows.ptr, 0, sizeof(double) * static_cast<size_t>(2 * S * W));
    for (int64_t j0 = ib / 8 * 8; j0 < N; j0 += Sh::TILE) {
      agg_tile_distances<T>(*work.pooled, ib, j0, sc.rt.ptr);
      for (int64_t s = 0; s < S; ++s) {
        double* row_sum = sc.rows.ptr + s * W;
        double* row_sq = sc.rows.ptr + (S + s) * W;
        if (in.kernels[s] == static_cast<int>(Kernel::kImq))
          agg_tile_tables<T, static_cast<int>(Kernel::kImq)>(work.scales[s], N, ib, j0, sc.rt.ptr, sc.kt.ptr,
                                                             sc.tables.ptr, row_sum, row_sq);
        else
          agg_tile_tables<T, static_cast<int>(Kernel::kRbf)>(work.scales[s], N, ib, j0, sc.rt.ptr, sc.kt.ptr,
                                                             sc.tables.ptr, row_sum, row_sq);
        agg_tile_products<T>(in, j0, sc.tables.ptr, sc.acc.ptr + s * P * W);
      }
    }
    // The row block's results, per kernel (acc: [S][P][W]).
    for (int64_t p = 0; p < P; ++p) {
      const uint32_t bits = row_bits<W>(in.labels + p * in.label_bytes, in.label_bytes, ib);
      for (int64_t s = 0; s < S; ++s) {
        const double* r = sc.acc.ptr + (s * P + p) * W;
        const double* row_sums = sc.rows.ptr + s * W;
        double in_x = 0.0, member = 0.0;
        for (int l = 0; l < W; ++l) {
          member += r[l];
          if ((bits >> l) & 1u) {
            in_x += r[l];
            member += row_sums[l];
          }
        }
        within[s * P + p] += 2.0 * in_x;
        member_rows[s * P + p] += member;
      }
    }
    for (int64_t s = 0; s < S; ++s)
      for (int l = 0; l < W; ++l) {
        total[s] += 2.0 * sc.rows.ptr[s * W + l];
        squares[s] += 2.0 * sc.rows.ptr[(S + s) * W + l];
      }
  }
}

#if defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// The AVX-512 float kernel: perm_task_x16's layout (16 labellings per vector) with the kernel loop.

// Stage 2 and 3 for one kernel: values from the tile's distances, tables, look-ups into acc
// ([X16_ROWS][P16]); adds the tile's row sums and sums of squares to row_sum / row_sq.
template <int KER>
static inline void agg_x16_kernel(const AggWork<float>& work, const Scales<float>& scales, int64_t ib, int64_t j0,
                                  AggScratch<float>& sc, double* acc_out, double* row_sum, double* row_sq) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  constexpr int W = X16_LANES;
  const int64_t N = work.pooled->rows, P16 = work.lanes_p;
  const float* rt = sc.rt.ptr;
  float* kt = sc.kt.ptr;
  float* tab = sc.tables.ptr;
  V bit_of_lane[4];  // [4][16]: bit b of the lane index, 0 or 1
  for (int b = 0; b < 4; ++b)
    for (int l = 0; l < W; ++l) bit_of_lane[b][l] = static_cast<float>((l >> b) & 1);
  I col_iota;
  for (int l = 0; l < W; ++l) col_iota[l] = l;
  V tile_sum[X16_ROWS], tile_sq[X16_ROWS];
  for (int r = 0; r < X16_ROWS; ++r) tile_sum[r] = tile_sq[r] = splat<V>(0.0f);
  for (int c = 0; c < X16_TILE / W; ++c) {
    const int64_t j = j0 + c * W;
    if (j >= N) {
      for (int r = 0; r < X16_ROWS; ++r) storev(kt + r * X16_TILE + c * W, splat<V>(0.0f));
      continue;
    }
    V rv[X16_ROWS], kv[X16_ROWS], wv[X16_ROWS];
    for (int r = 0; r < X16_ROWS; ++r) rv[r] = loadv<V>(rt + r * X16_TILE + c * W);
    kernel_eval<float, KER, X16_ROWS>(scales, rv, kv, wv);
    const I cols = col_iota + static_cast<int32_t>(j);
    for (int r = 0; r < X16_ROWS; ++r) {
      const I keep = (cols > static_cast<int32_t>(ib + r)) & (cols < static_cast<int32_t>(N));
      kv[r] = keep ? kv[r] : splat<V>(0.0f);
      tile_sum[r] += kv[r];
      tile_sq[r] += kv[r] * kv[r];
      storev(kt + r * X16_TILE + c * W, kv[r]);
    }
  }
  for (int r = 0; r < X16_ROWS; ++r) {
    row_sum[r] += hsum(tile_sum[r]);
    row_sq[r] += hsum(tile_sq[r]);
  }
  for (int r = 0; r < X16_ROWS; ++r)  // T_rq[s] = Σ_b bit_b(s)·K[r][4q + b] (each product exact)
    for (int q = 0; q < X16_GROUPS; ++q) {
      const float* k4 = kt + r * X16_TILE + 4 * q;
      V sums = k4[0] * bit_of_lane[0];
      sums = sums + k4[1] * bit_of_lane[1];
      sums = sums + k4[2] * bit_of_lane[2];
      sums = sums + k4[3] * bit_of_lane[3];
      storev(tab + (r * X16_GROUPS + q) * W, sums);
    }
  const uint8_t* lt = work.labels_t + (j0 / 8) * P16;
  for (int64_t p0 = 0; p0 < P16; p0 += X16_LANES) {
    V acc[X16_ROWS];
    for (int r = 0; r < X16_ROWS; ++r) acc[r] = splat<V>(0.0f);
#pragma GCC unroll 4
    for (int q2 = 0; q2 < X16_GROUPS / 2; ++q2) {
      const I bytes = bitcast<I>(_mm512_maskz_cvtepu8_epi32(  // [16] label bytes, widened
          0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(lt + q2 * P16 + p0))));
      const I high = bytes >> 4;
      for (int r = 0; r < X16_ROWS; ++r) {
        const float* t_r = tab + (r * X16_GROUPS + 2 * q2) * W;
        acc[r] += __builtin_shuffle(loadv<V>(t_r), bytes);
        acc[r] += __builtin_shuffle(loadv<V>(t_r + W), high);
      }
    }
    for (int r = 0; r < X16_ROWS; ++r) {
      double* out = acc_out + r * P16 + p0;
      for (int l = 0; l < W; ++l) out[l] += static_cast<double>(acc[r][l]);
    }
  }
}

static void agg_task_x16(const AggWork<float>& work, const PermTask& t, AggScratch<float>& sc, double* within,
                         double* member_rows, double* total, double* squares) {
  using V = Vec<float>::V;
  static_assert(Vec<float>::W == X16_LANES, "the AVX-512 kernel holds 16 floats per vector");
  constexpr int W = X16_LANES;
  const AggProblem& in = *work.in;
  const Pooled<float>& Z = *work.pooled;
  const int64_t N = Z.rows, d = Z.d, P = in.labellings, P16 = work.lanes_p, S = in.num_kernels;
  float* rt = sc.rt.ptr;
  for (int64_t ib = t.i0; ib < t.i1; ib += X16_ROWS) {
    std::memset(sc.acc.ptr, 0, sizeof(double) * static_cast<size_t>(S * X16_ROWS * P16));
    std::memset(sc.rows.ptr, 0, sizeof(double) * static_cast<size_t>(2 * S * X16_ROWS));
    const float* arow[X16_ROWS];  // rows past N read row N − 1: their pairs are masked
    for (int r = 0; r < X16_ROWS; ++r) arow[r] = Z.rp.ptr + std::min<int64_t>(ib + r, N - 1) * d;
    for (int64_t j0 = ib / W * W; j0 < N; j0 += X16_TILE) {
      // Stage 1: rt[r][jj] for the tile's columns below N.
      for (int c = 0; c < X16_TILE / W; ++c) {
        const int64_t j = j0 + c * W;
        if (j >= N) break;
        const float* panel = Z.soa.ptr + (j / W) * d * W;  // [d][16] columns j … j + 15
        V acc[X16_ROWS];
        for (int r = 0; r < X16_ROWS; ++r) acc[r] = splat<V>(0.0f);
#pragma GCC unroll 8
        for (int64_t k = 0; k < d; ++k) {
          const V bv = loadv<V>(panel + k * W);
          for (int r = 0; r < X16_ROWS; ++r) {
            const V df = bv - arow[r][k];
            acc[r] += df * df;
          }
        }
        for (int r = 0; r < X16_ROWS; ++r) storev(rt + r * X16_TILE + c * W, acc[r]);
      }
      for (int64_t s = 0; s < S; ++s) {
        double* acc_s = sc.acc.ptr + s * X16_ROWS * P16;
        double* row_sum = sc.rows.ptr + s * X16_ROWS;
        double* row_sq = sc.rows.ptr + (S + s) * X16_ROWS;
        if (in.kernels[s] == static_cast<int>(Kernel::kImq))
          agg_x16_kernel<static_cast<int>(Kernel::kImq)>(work, work.scales[s], ib, j0, sc, acc_s, row_sum, row_sq);
        else
          agg_x16_kernel<static_cast<int>(Kernel::kRbf)>(work, work.scales[s], ib, j0, sc, acc_s, row_sum, row_sq);
      }
    }
    for (int64_t p = 0; p < P; ++p) {
      const uint32_t bits = row_bits<X16_ROWS>(in.labels + p * in.label_bytes, in.label_bytes, ib);
      for (int64_t s = 0; s < S; ++s) {
        const double* acc_s = sc.acc.ptr + s * X16_ROWS * P16;
        const double* row_sums = sc.rows.ptr + s * X16_ROWS;
        double in_x = 0.0, member = 0.0;
        for (int r = 0; r < X16_ROWS; ++r) {
          const double w = acc_s[r * P16 + p];
          member += w;
          if ((bits >> r) & 1u) {
            in_x += w;
            member += row_sums[r];
          }
        }
        within[s * P + p] += 2.0 * in_x;
        member_rows[s * P + p] += member;
      }
    }
    for (int64_t s = 0; s < S; ++s)
      for (int r = 0; r < X16_ROWS; ++r) {
        total[s] += 2.0 * sc.rows.ptr[s * X16_ROWS + r];
        squares[s] += 2.0 * sc.rows.ptr[(S + s) * X16_ROWS + r];
      }
  }
}
#endif

template <typename T>
static void run_agg_task(const AggWork<T>& work, const PermTask& t, AggScratch<T>& sc, double* within,
                         double* member_rows, double* total, double* squares) {
#if defined(__AVX512F__)
  if constexpr (uses_x16<T>()) {
    agg_task_x16(work, t, sc, within, member_rows, total, squares);
    return;
  }
#endif
  agg_task<T>(work, t, sc, within, member_rows, total, squares);
}

template <typename T>
static void agg_worker(void* context, int worker) {
  AggWork<T>& work = *static_cast<AggWork<T>*>(context);
  AggScratch<T>& sc = *work.scratch[worker];
  const int64_t SP = work.in->num_kernels * work.in->labellings, S = work.in->num_kernels;
  for (;;) {
    const size_t slot = work.next.fetch_add(1);
    if (slot >= work.num_slots) break;
    double* within = work.within + slot * SP;
    double* member_rows = work.member_rows + slot * SP;
    double* total = work.total + slot * S;
    double* squares = work.squares + slot * S;
    for (int64_t e = 0; e < SP; ++e) within[e] = member_rows[e] = 0.0;
    for (int64_t s = 0; s < S; ++s) total[s] = squares[s] = 0.0;
    for (size_t ti = slot; ti < work.num_tasks; ti += work.num_slots)
      run_agg_task<T>(work, work.tasks[ti], sc, within, member_rows, total, squares);
  }
}

template <typename T>
static void agg_sums(const AggProblem& in, const T* z, double* within, double* member_rows, double* total,
                     double* squares) {
  const int64_t N = in.rows, P = in.labellings, S = in.num_kernels;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Pooled<T> pooled;
  double scale = 1.0;
  const RescaleBounds bounds{in.rescale_offset, in.rescale_lower, in.rescale_upper};
  if (prepare_pooled(pooled, z, N, in.d, bounds, &scale) != 0.0) {  // NaN: non-finite input, or no E fits
    for (int64_t e = 0; e < S * P; ++e) within[e] = member_rows[e] = nan;
    for (int64_t s = 0; s < S; ++s) total[s] = squares[s] = nan;
    return;
  }
  LocalVector<Scales<T>> scales(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const double bandwidth = in.bandwidths[s] * scale * scale;
    scales[s].count = 1;
    scales[s].b[0] = static_cast<T>(bandwidth);
    scales[s].ib[0] = static_cast<T>(1.0 / bandwidth);
    scales[s].nib[0] = static_cast<T>(-1.0 / bandwidth);
  }
  LocalVector<PermTask> tasks;
  for (int64_t i0 = 0; i0 < N; i0 += AGG_TASK_ROWS) {
    const int64_t i1 = std::min<int64_t>(i0 + AGG_TASK_ROWS, N);
    tasks.push_back(PermTask{i0, i1, static_cast<double>(i1 - i0) * static_cast<double>(N - i0)});
  }
  double pairs = 0.0;
  for (const PermTask& t : tasks) pairs += t.cost;
  // About 2·10⁷ pair-labelling look-ups (a few ms) per extra thread before it pays for itself.
  const double per_thread = 2.0e7;
  const double work_units = pairs * (static_cast<double>(S) * (static_cast<double>(P) / 4.0 + 8.0) +
                                     static_cast<double>(in.d));
  int threads = std::max(1, in.threads);
  threads = static_cast<int>(std::min<double>(threads, std::max(1.0, work_units / per_thread)));
  threads = std::max(1, std::min<int>(threads, static_cast<int>(tasks.size())));

  AggWork<T> work;
  AlignedBuf<uint8_t> labels_t;
  if (uses_x16<T>()) {  // [⌈N/8⌉ + X16_TILE/8][P rounded up to 16], zero padded (as perm_sums)
    work.lanes_p = round_up(P, X16_LANES);
    labels_t = AlignedBuf<uint8_t>(static_cast<size_t>((in.label_bytes + X16_TILE / 8) * work.lanes_p));
    for (int64_t p = 0; p < P; ++p)
      for (int64_t b = 0; b < in.label_bytes; ++b)
        labels_t.ptr[b * work.lanes_p + p] = in.labels[p * in.label_bytes + b];
    work.labels_t = labels_t.ptr;
  }
  const size_t slots = std::min<size_t>(tasks.size(), AGG_SLOTS);
  threads = std::min<int>(threads, static_cast<int>(slots));
  LocalVector<double> within_parts(slots * static_cast<size_t>(S * P));
  LocalVector<double> member_parts(slots * static_cast<size_t>(S * P));
  LocalVector<double> total_parts(slots * static_cast<size_t>(S));
  LocalVector<double> square_parts(slots * static_cast<size_t>(S));
  LocalVector<AggScratch<T>> scratch_store;
  scratch_store.reserve(static_cast<size_t>(threads));
  LocalVector<AggScratch<T>*> scratch;
  for (int t = 0; t < threads; ++t) {
    scratch_store.emplace_back(S, P, work.lanes_p, uses_x16<T>());
    scratch.push_back(&scratch_store.back());
  }
  work.in = &in;
  work.pooled = &pooled;
  work.scales = scales.data();
  work.tasks = tasks.data();
  work.num_tasks = tasks.size();
  work.num_slots = slots;
  work.scratch = scratch.data();
  work.within = within_parts.data();
  work.member_rows = member_parts.data();
  work.total = total_parts.data();
  work.squares = square_parts.data();
  run_workers(threads, &agg_worker<T>, &work);

  // Fixed-order reduction over the slots.
  for (int64_t e = 0; e < S * P; ++e) within[e] = member_rows[e] = 0.0;
  for (int64_t s = 0; s < S; ++s) total[s] = squares[s] = 0.0;
  for (size_t slot = 0; slot < slots; ++slot) {
    const double* w = within_parts.data() + slot * S * P;
    const double* r = member_parts.data() + slot * S * P;
    for (int64_t e = 0; e < S * P; ++e) {
      within[e] += w[e];
      member_rows[e] += r[e];
    }
    for (int64_t s = 0; s < S; ++s) {
      total[s] += total_parts[slot * S + s];
      squares[s] += square_parts[slot * S + s];
    }
  }
}

void agg_sums_f32(const AggProblem& p, const float* z, double* within, double* member_rows, double* total,
                  double* squares) {
  agg_sums<float>(p, z, within, member_rows, total, squares);
}

void agg_sums_f64(const AggProblem& p, const double* z, double* within, double* member_rows, double* total,
                  double* squares) {
  agg_sums<double>(p, z, within, member_rows, total, squares);
}

}  // namespace

extern const AggPath kAggPath = {
    WAE_FAST_STR(WAE_FAST_ISA),
    &agg_sums_f32,
    &agg_sums_f64,
};

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
