// Fused CPU kernels for the MMD permutation test. See mmd_perm_cpu.h for the maths and the contract.
//
// This file is compiled once per instruction-set path, through csrc/cpu/isa_<name>.cpp (as
// mmd_cpu.cpp), and evaluates k(r) with the same kernel_eval as the MMD kernels (cpu/kernel_math.h).
// Everything here lives in wae_fast::cpu::WAE_FAST_ISA and, apart from the path's table kPermPath,
// has internal linkage (see cpu/simd.h).
//
// Design: the product K₀·U by table look-up ("four Russians"), the labels never expanded.
//   * The pooled rows are centred on their common mean and rescaled by 2^−E (cpu/rescale.h, as the MMD
//     kernels do) and
//     copied twice: row-major ([N][d], the columns' coordinates) and in packed panels of W rows
//     ([⌈N/W⌉][d][W], W = the vector lanes: the row block's coordinates as vectors).
//   * A task owns TASK_ROWS rows; each row block of W rows (one vector, lanes = rows) sweeps the
//     columns j > i (the strict upper triangle: every pair once) in tiles of TILE columns:
//       stage 1  K[j] = k(‖z_i − z_j‖²) for the W rows, direct differences, 0 where j ≤ i
//       stage 2  per group q of 4 columns, the 16 subset sums S_q[s] = Σ_{b ∈ s} K[4q + b]
//                (15 vector adds; the tile's tables fill 16 KiB, so they stay in the L1 cache)
//       stage 3  per labelling p, with the tile's label bits read as nibbles s_pq:
//                acc = Σ_q S_q[s_pq] = Σ_{j in tile} K[j]·u_pj   one vector load and add per 4 columns
//                R_p += acc (in double)                        (a multiply-add product: 4 per 4 columns)
//     and at the end of the row block, with T_i = Σ_{j>i} K_ij and R_pi = Σ_{j>i} K_ij u_pj:
//       within[p] += 2 Σ_i u_pi R_pi,   member_rows[p] += Σ_i (R_pi + u_pi T_i),   total += 2 Σ_i T_i
//     (Σ_{i<j} K_ij (u_pi + u_pj) = Σ_{i≠j} u_pi K_ij).
//   * With AVX-512, float inputs take the transposed variant (perm_task_x16): the lanes hold 16
//     labellings instead of W rows, a group's 16 subset sums for one row fill one vector, and one
//     variable shuffle (vpermps, indexed by 16 labellings' nibbles) looks up 16 labellings × 4 columns;
//     its accumulators stay in registers for a whole tile. It reads the labels transposed
//     ([⌈N/8⌉][P], one copy per call).
//   * The subset sums and the per-tile sums are in the input type (float: at most 4 and TILE/4
//     terms), everything across tiles in double.
//   * Tasks are pulled from an atomic counter by the workers of run_workers (parallel.h); each writes
//     its own result slots, summed in task order: the result does not depend on the thread count.
//   * NaN/Inf anywhere in z is detected during the copy; every output is then NaN.
#ifndef WAE_FAST_ISA
#error "mmd_perm_cpu.cpp is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include "cpu/mmd_perm_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
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

template <typename T>
struct PermScratch {
  AlignedBuf<T> kt;        // [TILE][W] stage 1: the tile's kernel values, lanes = rows
  AlignedBuf<T> tables;    // [GROUPS][16][W] stage 2: subset sums
  AlignedBuf<double> acc;  // [P][W] stage 3: R_p of the row block's W rows
  // x16: the AVX-512 float kernel's layouts ([X16_ROWS][X16_TILE], [X16_ROWS][X16_GROUPS][16] and
  // [X16_ROWS][P rounded up to 16]) instead.
  PermScratch(int64_t labellings, bool x16)
      : kt(x16 ? X16_ROWS * X16_TILE : PermShape<T>::TILE * PermShape<T>::W),
        tables(x16 ? X16_ROWS * X16_GROUPS * 16 : PermShape<T>::GROUPS * 16 * PermShape<T>::W),
        acc(static_cast<size_t>(x16 ? X16_ROWS * round_up(labellings, X16_LANES)
                                    : labellings * PermShape<T>::W)) {}
};

template <typename T>
struct PermWork {
  const PermProblem* in = nullptr;
  const Pooled<T>* pooled = nullptr;
  Scales<T> scales;
  const PermTask* tasks = nullptr;
  const size_t* order = nullptr;   // task indices, heaviest first
  size_t num_tasks = 0;
  PermScratch<T>* const* scratch = nullptr;  // one per worker
  double* within = nullptr;        // [num_tasks][P]
  double* member_rows = nullptr;   // [num_tasks][P]
  double* total = nullptr;         // [num_tasks]
  // The AVX-512 float kernel only: the labels transposed, [⌈N/8⌉ + X16_TILE/8][lanes_p] (a byte of
  // 16 consecutive labellings contiguous; zero padded), lanes_p = P rounded up to 16.
  const uint8_t* labels_t = nullptr;
  int64_t lanes_p = 0;
  std::atomic<size_t> next{0};
};

// Stage 1 and 2 for the row block at ib against the tile of columns [j0, j0 + TILE): the kernel
// values (0 where j ≤ i or j ≥ N) and their subset-sum tables; returns the tile's row sums.
template <typename T, int KER>
static inline typename PermShape<T>::V tile_tables(const PermWork<T>& work, int64_t ib, int64_t j0,
                                                   PermScratch<T>& S) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  using I = typename Sh::I;
  using Lane = typename Sh::Lane;
  constexpr int W = Sh::W;
  const Pooled<T>& Z = *work.pooled;
  const int64_t N = Z.rows, d = Z.d;
  const T* panel = Z.soa.ptr + (ib / W) * d * W;  // [d][W] the row block
  I row_index;
  for (int l = 0; l < W; ++l) row_index[l] = static_cast<Lane>(ib + l);
  V row_sum = splat<V>(T(0));
  T* kt = S.kt.ptr;
  for (int jj = 0; jj < Sh::TILE; jj += 4) {
    V r[4], kv[4], wv[4];
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
    kernel_eval<T, KER, 4>(work.scales, r, kv, wv);
    for (int c = 0; c < 4; ++c) {
      const int64_t j = j0 + jj + c;
      const I keep = row_index < static_cast<Lane>(j < N ? j : 0);  // j > i, and no column past N
      kv[c] = keep ? kv[c] : splat<V>(T(0));
      row_sum += kv[c];
      storev(kt + (jj + c) * W, kv[c]);
    }
  }
  // Subset sums of each 4-column group: S[s] = Σ_{b ∈ s} K[4q + b], bit b of s for column 4q + b.
  T* tab = S.tables.ptr;
  for (int q = 0; q < Sh::GROUPS; ++q) {
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
  return row_sum;
}

// Stage 3 for one tile: R_p += Σ_{j in tile} K[j]·u_pj for every labelling p.
template <typename T>
static inline void tile_products(const PermWork<T>& work, int64_t j0, PermScratch<T>& S) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  constexpr int W = Sh::W;
  const PermProblem& in = *work.in;
  const int64_t byte0 = j0 / 8;
  const int64_t avail = std::min<int64_t>(Sh::TILE / 8, in.label_bytes - byte0);  // label bytes in range
  const T* tab = S.tables.ptr;
  double* acc_out = S.acc.ptr;
  for (int64_t p = 0; p < in.labellings; ++p) {
    const uint8_t* lab = in.labels + p * in.label_bytes + byte0;
    uint64_t words[Sh::WORDS];
    if (avail == Sh::TILE / 8) {
      std::memcpy(words, lab, sizeof(words));
    } else {
      std::memset(words, 0, sizeof(words));
      std::memcpy(words, lab, static_cast<size_t>(avail));
    }
    V acc[4] = {splat<V>(T(0)), splat<V>(T(0)), splat<V>(T(0)), splat<V>(T(0))};
#pragma GCC unroll 64
    for (int q = 0; q < Sh::GROUPS; ++q) {
      const unsigned nibble = static_cast<unsigned>(words[q / 16] >> (4 * (q % 16))) & 15u;
      acc[q % 4] += loadv<V>(tab + (q * 16 + nibble) * W);
    }
    const V sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    double* out = acc_out + p * W;
    for (int l = 0; l < W; ++l) out[l] += static_cast<double>(sum[l]);
  }
}

template <typename T, int KER>
static void perm_task(const PermWork<T>& work, const PermTask& t, PermScratch<T>& S, double* within,
                      double* member_rows, double& total) {
  using Sh = PermShape<T>;
  using V = typename Sh::V;
  constexpr int W = Sh::W;
  const PermProblem& in = *work.in;
  const int64_t N = work.pooled->rows, P = in.labellings;
  for (int64_t p = 0; p < P; ++p) within[p] = member_rows[p] = 0.0;
  total = 0.0;
  for (int64_t ib = t.i0; ib < t.i1; ib += W) {
    std::memset(S.acc.ptr, 0, sizeof(double) * static_cast<size_t>(P * W));
    double row_sums[W] = {};  // T_i = Σ_{j>i} K_ij, in double across tiles
    for (int64_t j0 = ib / 8 * 8; j0 < N; j0 += Sh::TILE) {
      const V tile_sum = tile_tables<T, KER>(work, ib, j0, S);
      for (int l = 0; l < W; ++l) row_sums[l] += static_cast<double>(tile_sum[l]);
      tile_products<T>(work, j0, S);
    }
    for (int64_t p = 0; p < P; ++p) {
      const uint32_t bits = row_bits<W>(in.labels + p * in.label_bytes, in.label_bytes, ib);
      const double* r = S.acc.ptr + p * W;
      double in_x = 0.0, member = 0.0;
      for (int l = 0; l < W; ++l) {
        member += r[l];
        if ((bits >> l) & 1u) {
          in_x += r[l];
          member += row_sums[l];
        }
      }
      within[p] += 2.0 * in_x;
      member_rows[p] += member;
    }
    for (int l = 0; l < W; ++l) total += 2.0 * row_sums[l];
  }
}

#if defined(__AVX512F__)
// ---------------------------------------------------------------------------------------------
// The AVX-512 float kernel: the same subset-sum tables, looked up with the labellings in the lanes.
//   stage 1  K[r][j] for X16_ROWS rows against 16 columns per vector (as mmd_cpu's tile_values)
//   stage 2  per row r and group q the 16 subset sums in one 512-bit register's worth of floats:
//            T_rq[s] = Σ_b bit_b(s)·K[r][4q + b]
//   stage 3  per block of 16 labellings: the labels' nibbles of group q for the 16 labellings are one
//            vector of indices (the transposed labels: 16 contiguous bytes, widened), and
//            acc_r += permutexvar(indices, T_rq) looks up 16 labellings × 4 columns in one instruction;
//            the X16_ROWS accumulators stay in registers for the whole tile, then go to double.
template <int KER>
static void perm_task_x16(const PermWork<float>& work, const PermTask& t, PermScratch<float>& S, double* within,
                          double* member_rows, double& total) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  static_assert(Vec<float>::W == X16_LANES, "the AVX-512 kernel holds 16 floats per vector");
  constexpr int W = X16_LANES;
  const PermProblem& in = *work.in;
  const Pooled<float>& Z = *work.pooled;
  const int64_t N = Z.rows, d = Z.d, P = in.labellings, P16 = work.lanes_p;
  for (int64_t p = 0; p < P; ++p) within[p] = member_rows[p] = 0.0;
  total = 0.0;
  float* kt = S.kt.ptr;
  float* tab = S.tables.ptr;
  double* acc_out = S.acc.ptr;
  V bit_of_lane[4];  // [4][16]: bit b of the lane index, 0 or 1
  for (int b = 0; b < 4; ++b)
    for (int l = 0; l < W; ++l) bit_of_lane[b][l] = static_cast<float>((l >> b) & 1);
  I col_iota;
  for (int l = 0; l < W; ++l) col_iota[l] = l;
  for (int64_t ib = t.i0; ib < t.i1; ib += X16_ROWS) {
    std::memset(acc_out, 0, sizeof(double) * static_cast<size_t>(X16_ROWS * P16));
    double row_sums[X16_ROWS] = {};  // T_i = Σ_{j>i} K_ij
    const float* arow[X16_ROWS];     // rows past N read row N − 1: their pairs are masked
    for (int r = 0; r < X16_ROWS; ++r) arow[r] = Z.rp.ptr + std::min<int64_t>(ib + r, N - 1) * d;
    for (int64_t j0 = ib / W * W; j0 < N; j0 += X16_TILE) {
      // Stage 1: kt[r][jj], 0 where j ≤ i or j ≥ N.
      V tile_sum[X16_ROWS];
      for (int r = 0; r < X16_ROWS; ++r) tile_sum[r] = splat<V>(0.0f);
      for (int c = 0; c < X16_TILE / W; ++c) {
        const int64_t j = j0 + c * W;
        if (j >= N) {
          for (int r = 0; r < X16_ROWS; ++r) storev(kt + r * X16_TILE + c * W, splat<V>(0.0f));
          continue;
        }
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
        V kv[X16_ROWS], wv[X16_ROWS];
        kernel_eval<float, KER, X16_ROWS>(work.scales, acc, kv, wv);
        const I cols = col_iota + static_cast<int32_t>(j);
        for (int r = 0; r < X16_ROWS; ++r) {
          const I keep = (cols > static_cast<int32_t>(ib + r)) & (cols < static_cast<int32_t>(N));
          kv[r] = keep ? kv[r] : splat<V>(0.0f);
          tile_sum[r] += kv[r];
          storev(kt + r * X16_TILE + c * W, kv[r]);
        }
      }
      for (int r = 0; r < X16_ROWS; ++r) row_sums[r] += hsum(tile_sum[r]);
      // Stage 2: T_rq[s] = Σ_b bit_b(s)·K[r][4q + b] (each product exact: a value or 0).
      for (int r = 0; r < X16_ROWS; ++r)
        for (int q = 0; q < X16_GROUPS; ++q) {
          const float* k4 = kt + r * X16_TILE + 4 * q;
          V sums = k4[0] * bit_of_lane[0];
          sums = sums + k4[1] * bit_of_lane[1];
          sums = sums + k4[2] * bit_of_lane[2];
          sums = sums + k4[3] * bit_of_lane[3];
          storev(tab + (r * X16_GROUPS + q) * W, sums);
        }
      // Stage 3. A variable shuffle of a 16-float vector by 16 indices, taken modulo 16 (the low
      // nibble), is one vpermps.
      const uint8_t* lt = work.labels_t + (j0 / 8) * P16;
      for (int64_t p0 = 0; p0 < P16; p0 += X16_LANES) {
        V acc[X16_ROWS];
        for (int r = 0; r < X16_ROWS; ++r) acc[r] = splat<V>(0.0f);
#pragma GCC unroll 4
        for (int q2 = 0; q2 < X16_GROUPS / 2; ++q2) {
          const I bytes = bitcast<I>(_mm512_maskz_cvtepu8_epi32(   // [16] label bytes, widened
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
    for (int64_t p = 0; p < P; ++p) {
      const uint32_t bits = row_bits<X16_ROWS>(in.labels + p * in.label_bytes, in.label_bytes, ib);
      double in_x = 0.0, member = 0.0;
      for (int r = 0; r < X16_ROWS; ++r) {
        const double w = acc_out[r * P16 + p];
        member += w;
        if ((bits >> r) & 1u) {
          in_x += w;
          member += row_sums[r];
        }
      }
      within[p] += 2.0 * in_x;
      member_rows[p] += member;
    }
    for (int r = 0; r < X16_ROWS; ++r) total += 2.0 * row_sums[r];
  }
}
#endif

template <typename T, int KER>
static void run_perm_task(const PermWork<T>& work, const PermTask& t, PermScratch<T>& S, double* within,
                          double* member_rows, double& total) {
#if defined(__AVX512F__)
  if constexpr (uses_x16<T>()) {
    perm_task_x16<KER>(work, t, S, within, member_rows, total);
    return;
  }
#endif
  perm_task<T, KER>(work, t, S, within, member_rows, total);
}

template <typename T>
static void perm_worker(void* context, int worker) {
  PermWork<T>& work = *static_cast<PermWork<T>*>(context);
  PermScratch<T>& S = *work.scratch[worker];
  const int64_t P = work.in->labellings;
  for (;;) {
    const size_t idx = work.next.fetch_add(1);
    if (idx >= work.num_tasks) break;
    const size_t ti = work.order[idx];
    double* within = work.within + ti * P;
    double* member_rows = work.member_rows + ti * P;
    if (work.in->kernel == Kernel::kImq)
      run_perm_task<T, static_cast<int>(Kernel::kImq)>(work, work.tasks[ti], S, within, member_rows, work.total[ti]);
    else
      run_perm_task<T, static_cast<int>(Kernel::kRbf)>(work, work.tasks[ti], S, within, member_rows, work.total[ti]);
  }
}

template <typename T>
static double perm_sums(const PermProblem& in, const T* z, double* within, double* member_rows) {
  const int64_t N = in.rows, P = in.labellings;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Pooled<T> pooled;
  double scale = 1.0;
  const RescaleBounds bounds{in.rescale_offset, in.rescale_lower, in.rescale_upper};
  if (prepare_pooled(pooled, z, N, in.d, bounds, &scale) != 0.0) {  // NaN: non-finite input, or no E fits
    for (int64_t p = 0; p < P; ++p) within[p] = member_rows[p] = nan;
    return nan;
  }
  PermWork<T> work;
  work.in = &in;
  work.pooled = &pooled;
  work.scales.count = std::min(in.num_bandwidths, kMaxScales);
  for (int q = 0; q < work.scales.count; ++q) {
    const double bandwidth = in.bandwidths[q] * scale * scale;
    work.scales.b[q] = static_cast<T>(bandwidth);
    work.scales.ib[q] = static_cast<T>(1.0 / bandwidth);
    work.scales.nib[q] = static_cast<T>(-1.0 / bandwidth);
  }
  // Tasks, heaviest (earliest rows: the longest triangle rows) first; the order only affects load
  // balance, never the result.
  LocalVector<PermTask> tasks;
  for (int64_t i0 = 0; i0 < N; i0 += PERM_TASK_ROWS) {
    const int64_t i1 = std::min<int64_t>(i0 + PERM_TASK_ROWS, N);
    tasks.push_back(PermTask{i0, i1, static_cast<double>(i1 - i0) * static_cast<double>(N - i0)});
  }
  LocalVector<size_t> order(tasks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;  // costs already decrease with i0

  double pairs = 0.0;
  for (const PermTask& t : tasks) pairs += t.cost;
  // About 2·10⁷ pair-labelling look-ups (a few ms) per extra thread before it pays for itself.
  const double per_thread = 2.0e7;
  const double work_units = pairs * (static_cast<double>(P) / 4.0 + static_cast<double>(in.d) + 8.0);
  int threads = std::max(1, in.threads);
  threads = static_cast<int>(std::min<double>(threads, std::max(1.0, work_units / per_thread)));
  threads = std::max(1, std::min<int>(threads, static_cast<int>(tasks.size())));

  LocalVector<double> within_parts(tasks.size() * static_cast<size_t>(P));
  LocalVector<double> member_parts(tasks.size() * static_cast<size_t>(P));
  LocalVector<double> total_parts(tasks.size());
  LocalVector<PermScratch<T>> scratch_store;
  scratch_store.reserve(static_cast<size_t>(threads));
  LocalVector<PermScratch<T>*> scratch;
  for (int t = 0; t < threads; ++t) {
    scratch_store.emplace_back(P, uses_x16<T>());
    scratch.push_back(&scratch_store.back());
  }
  LocalVector<uint8_t> labels_t;
  if (uses_x16<T>()) {  // [⌈N/8⌉ + X16_TILE/8][P rounded up to 16], zero padded
    work.lanes_p = round_up(P, X16_LANES);
    labels_t.assign(static_cast<size_t>((in.label_bytes + X16_TILE / 8) * work.lanes_p), 0);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t b = 0; b < in.label_bytes; ++b) labels_t[b * work.lanes_p + p] = in.labels[p * in.label_bytes + b];
    work.labels_t = labels_t.data();
  }
  work.tasks = tasks.data();
  work.order = order.data();
  work.num_tasks = tasks.size();
  work.scratch = scratch.data();
  work.within = within_parts.data();
  work.member_rows = member_parts.data();
  work.total = total_parts.data();
  run_workers(threads, &perm_worker<T>, &work);

  // Fixed-order reduction over tasks.
  for (int64_t p = 0; p < P; ++p) within[p] = member_rows[p] = 0.0;
  double total = 0.0;
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const double* w = within_parts.data() + ti * P;
    const double* r = member_parts.data() + ti * P;
    for (int64_t p = 0; p < P; ++p) {
      within[p] += w[p];
      member_rows[p] += r[p];
    }
    total += total_parts[ti];
  }
  return total;
}

double perm_sums_f32(const PermProblem& p, const float* z, double* within, double* member_rows) {
  return perm_sums<float>(p, z, within, member_rows);
}

double perm_sums_f64(const PermProblem& p, const double* z, double* within, double* member_rows) {
  return perm_sums<double>(p, z, within, member_rows);
}

}  // namespace

extern const PermPath kPermPath = {
    WAE_FAST_ISA_NAME,
    &perm_sums_f32,
    &perm_sums_f64,
};

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
