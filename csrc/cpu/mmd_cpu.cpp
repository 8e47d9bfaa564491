// Fused CPU kernels for MMD² and its gradients. See mmd_cpu.h for the maths and the contract.
//
// This file is compiled once per instruction-set path: csrc/cpu/isa_<name>.cpp defines WAE_FAST_ISA
// (the namespace, e.g. avx2), includes this file with the path's other sources and is compiled with
// that path's flags. Everything here lives in wae_fast::cpu::WAE_FAST_ISA and, apart from the entry
// points mmd_fused_f32 / mmd_fused_f64 (cpu/isa_info.h), has internal linkage (see cpu/simd.h).
//
// Design (a GEMM micro-kernel turned into a pairwise reduction):
//   * Both point sets are copied once per call, centred on their common mean (distances and
//     gradients are shift invariant; centring keeps float32 differences accurate for data far from the
//     origin) and rescaled by 2^−E, the bandwidths by 2^−2E (spec.rescale_exponent: every distance and
//     bandwidth stays inside the type for data of any magnitude; a power of two changes no rounding),
//     into two layouts: row-major with d padded to the gradient vector width (`rp`,
//     [rows_pad][dp]) and packed column panels (`soa`, [rows_pad/W][d][W]: the d coordinates of W
//     consecutive points, so the distance loop streams memory). O((n+m)·d) extra memory.
//   * A task owns TASK_ROWS rows of one set and sweeps column tiles of TILE_COLS columns, first of its
//     own set ("within", diagonal excluded), then of the other set ("cross"). Within a tile, ROWS_R
//     rows at a time are held against a SIMD vector of W columns:
//       stage 1  r = Σ_k (a_ik − b_kj)²          direct differences (no ‖a‖²+‖b‖²−2ab cancellation)
//       stage 2  k(r), wpos(r) for every scale   accumulated to the value; wpos stored in a tile buffer
//                                                (IMQ: rcp14 + Newton; RBF: a vectorised exp)
//       stage 3  G_i += Σ_j wpos_ij (b_j − a_i)  a small GEMM-like pass [R, tile] × [tile, dp],
//                                                vectorised over d, direct differences again
//     Tile partial sums are kept in the input type and flushed to double per tile; the value and
//     the gradient rows are accumulated in double.
//   * Sweeps (spec.Sweep, Mode here): without a gradient for a set, its within block is swept as a
//     triangle (j > i) and doubled; with one, the full square is swept (every row's gradient is then
//     owned by one task); the cross block is swept from the rows of x, and from the rows of y only
//     for ∂/∂y.
//   * Row ranges (MmdProblem::x_begin …): only the tasks of the given rows are made; everything else
//     (centring and copying all rows, the sweeps against all columns) is unchanged, so each process of
//     the distributed statistic runs the single-process code on its share of the rows.
//   * Tasks are pulled from an atomic counter by the workers of run_workers (parallel.h); each writes
//     its own value slots and its own gradient rows, and the slots are summed in task order: the
//     result does not depend on the thread count or on scheduling (bitwise).
//   * NaN/Inf anywhere in the inputs is detected during the copy (v − v); the value and every
//     gradient entry are then NaN and no pair is swept.
#ifndef WAE_FAST_ISA
#error "mmd_cpu.cpp is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include "cpu/mmd_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/isa_info.h"
#include "cpu/kernel_math.h"
#include "cpu/parallel.h"
#include "cpu/rescale.h"
#include "cpu/simd.h"

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

#ifndef WAE_FAST_TASK_ROWS
#define WAE_FAST_TASK_ROWS 64
#endif
#ifndef WAE_FAST_TILE_COLS
#define WAE_FAST_TILE_COLS 512
#endif
constexpr int ROWS_R = 8;                         // rows held against one column vector (register block)
constexpr int TASK_ROWS = WAE_FAST_TASK_ROWS;     // rows per task (multiple of ROWS_R)
constexpr int TILE_COLS = WAE_FAST_TILE_COLS;     // columns per tile (multiple of every vector width)
static_assert(TASK_ROWS % ROWS_R == 0 && TILE_COLS % 64 == 0, "tile sizes");
constexpr int MAX_NV = 2;         // stage-3 vectors per row per pass over the tile

constexpr Mode kCross = Mode::kCross;
constexpr Mode kFull = Mode::kFull;
constexpr Mode kTriangle = Mode::kTriangle;

// One point set, centred, in the two layouts the kernels read.
template <typename T>
struct PointSet {
  int64_t rows = 0, rows_pad = 0, dp = 0;
  bool wide_grad = false;  // stage 3 uses full-width vectors (d > the 256-bit lane count)
  AlignedBuf<T> rp;   // [rows_pad][dp] row-major, zero padded
  AlignedBuf<T> soa;  // [rows_pad / W][d][W] packed panels, zero padded
};

// The copies of one set: v·2^−E − centre·2^−E (``centre`` holds the rescaled centre; the product is exact,
// so the difference rounds as v − centre would, and data near the largest float do not overflow).
template <typename T>
static double prepare(PointSet<T>& s, const T* src, int64_t rows, int64_t d, const T* centre, T scale) {
  s.rows = rows;
  s.rows_pad = round_up(rows, Vec<T>::W);  // the sweeps read columns up to round_up(rows, W)
  s.wide_grad = d > Vec<T>::W3;
  s.dp = round_up(d, s.wide_grad ? Vec<T>::W : Vec<T>::W3);
  s.rp = AlignedBuf<T>(static_cast<size_t>(s.rows_pad * s.dp));
  s.soa = AlignedBuf<T>(static_cast<size_t>(d * s.rows_pad));
  constexpr int64_t W = Vec<T>::W;
  double nonfinite = 0.0;  // 0, or NaN when any input is NaN or ±Inf
  for (int64_t i = 0; i < rows; ++i) {
    const T* row = src + i * d;
    T* dst = s.rp.ptr + i * s.dp;
    T flag = 0;
    for (int64_t k = 0; k < d; ++k) {
      T v = row[k];
      flag += v - v;
      T c = v * scale - centre[k];
      dst[k] = c;
      s.soa.ptr[(i / W) * d * W + k * W + (i % W)] = c;
    }
    nonfinite += static_cast<double>(flag);
  }
  return nonfinite;
}

template <typename T>
struct Problem {
  int64_t d = 0;
  int ker = 0;
  bool unbiased = true;
  Scales<T> scales;
  PointSet<T> set[2];      // 0: x, 1: y
  bool need_grad[2] = {false, false};
  T* grad_out[2] = {nullptr, nullptr};
  double scale = 1.0;  // 2^−E: the gradients of the rescaled data times this are the gradients
  int64_t row_begin[2] = {0, 0};  // grad_out[s] holds rows row_begin[s] … of set s
  double coef_within[2] = {0, 0};  // ∂/∂a_i = Σ_blocks coef · Σ_j wpos_ij (a_i − b_j)
  double coef_cross = 0.0;
};

struct Task {
  int set;          // 0: rows of x, 1: rows of y
  int64_t i0, i1;   // row range
  double cost;
};

// Per-thread scratch.
template <typename T>
struct Scratch {
  AlignedBuf<T> wbuf;      // [ROWS_R][TILE_COLS]
  AlignedBuf<double> gsum;  // [TASK_ROWS][dp]
  Scratch(int64_t dp)
      : wbuf(ROWS_R * TILE_COLS), gsum(static_cast<size_t>(TASK_ROWS * dp)) {}
};

// Stage 1 + 2 for NR rows against columns [jlo, jhi) of a tile starting at j0.
template <typename T, int KER, int NR, bool GRAD>
static inline void tile_values(const Problem<T>& P, const PointSet<T>& A, const PointSet<T>& B, Mode mode,
                               int64_t ib, int64_t j0, int64_t jlo, int64_t jhi, T* wbuf,
                               typename Vec<T>::V& ks) {
  using V = typename Vec<T>::V;
  using I = typename Vec<T>::I;
  constexpr int W = Vec<T>::W;
  const int64_t d = P.d;
  const int64_t ncols = B.rows;
  const T* arow[NR];
  for (int r = 0; r < NR; ++r) arow[r] = A.rp.ptr + (ib + r) * A.dp;
  I iota;
  for (int l = 0; l < W; ++l) iota[l] = l;

  for (int64_t j = jlo; j < jhi; j += W) {
    V acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = splat<V>(T(0));
    const T* bp = B.soa.ptr + j * d;  // panel j / W: [d][W]
#pragma GCC unroll 8
    for (int64_t k = 0; k < d; ++k) {
      V bv = loadv<V>(bp + k * W);  // [W] coordinate k of columns j .. j + W
      for (int r = 0; r < NR; ++r) {
        V df = bv - arow[r][k];  // broadcast operand; the sign is irrelevant (squared)
        acc[r] += df * df;
      }
    }
    V kv[NR], wv[NR];
    kernel_eval<T, KER, NR>(P.scales, acc, kv, wv);
    const bool edge = (j + W > ncols) || (mode != kCross && j < ib + NR && j + W > ib);
    if (edge) {
      using Lane = typename Vec<T>::Lane;
      I jj = iota + static_cast<Lane>(j);
      for (int r = 0; r < NR; ++r) {
        I valid = jj < static_cast<Lane>(ncols);
        const Lane row = static_cast<Lane>(ib + r);
        if (mode == kFull) valid &= jj != row;
        if (mode == kTriangle) valid &= jj > row;
        kv[r] = valid ? kv[r] : splat<V>(T(0));
        wv[r] = valid ? wv[r] : splat<V>(T(0));
      }
    }
    for (int r = 0; r < NR; ++r) ks += kv[r];
    if (GRAD) {
      for (int r = 0; r < NR; ++r) storev(wbuf + r * TILE_COLS + (j - j0), wv[r]);
    }
  }
}

// Stage 3: G[r][kc : kc + NV·WG] += Σ_{j ∈ [jlo, jend)} w[r][j] · (b_j − a_r)[kc : ...], flushed × coef.
// Direct differences: a duplicated point contributes exactly 0, and nothing cancels between a
// weight-sum term and a weighted-mean term. VG is the vector type over features: 256-bit for small d
// (fewer wasted lanes), full width otherwise.
template <typename T, typename VG, int NR, int NV>
static inline void tile_grad(const PointSet<T>& A, int64_t ib, const PointSet<T>& B, int64_t kc,
                             const T* wbuf, int64_t j0, int64_t jlo, int64_t jend, double coef,
                             double* gsum, int64_t gld) {
  constexpr int WG = sizeof(VG) / sizeof(T);
  const int64_t dp = B.dp;
  // Two accumulator sets (even/odd j) hide the FMA latency when NR·NV is small.
  constexpr bool kTwo = NR * NV <= 4;
  VG a[NR][NV];                   // [NR, NV·WG] the rows' own coordinates
  VG acc0[NR][NV], acc1[NR][NV];  // [NR, NV·WG] each
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) {
      a[r][v] = loadv<VG>(A.rp.ptr + (ib + r) * A.dp + kc + v * WG);
      acc0[r][v] = acc1[r][v] = splat<VG>(T(0));
    }
  const T* bp = B.rp.ptr + kc;
  int64_t j = jlo;
  if (kTwo) {
    for (; j + 1 < jend; j += 2) {
      VG b0[NV], b1[NV];
      for (int v = 0; v < NV; ++v) {
        b0[v] = loadv<VG>(bp + j * dp + v * WG);
        b1[v] = loadv<VG>(bp + (j + 1) * dp + v * WG);
      }
      for (int r = 0; r < NR; ++r) {
        const T w0 = wbuf[r * TILE_COLS + (j - j0)];
        const T w1 = wbuf[r * TILE_COLS + (j + 1 - j0)];
        for (int v = 0; v < NV; ++v) {
          acc0[r][v] += w0 * (b0[v] - a[r][v]);
          acc1[r][v] += w1 * (b1[v] - a[r][v]);
        }
      }
    }
  }
  for (; j < jend; ++j) {
    VG b0[NV];
    for (int v = 0; v < NV; ++v) b0[v] = loadv<VG>(bp + j * dp + v * WG);
    for (int r = 0; r < NR; ++r) {
      const T w0 = wbuf[r * TILE_COLS + (j - j0)];
      for (int v = 0; v < NV; ++v) acc0[r][v] += w0 * (b0[v] - a[r][v]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < NV; ++v) {
      VG s = acc0[r][v] + acc1[r][v];
      double* g = gsum + r * gld + kc + v * WG;
      for (int l = 0; l < WG; ++l) g[l] += coef * static_cast<double>(s[l]);
    }
}

template <typename T, typename VG, int NR>
static void tile_grad_chunks(const PointSet<T>& A, int64_t ib, const PointSet<T>& B, const T* wbuf,
                             int64_t j0, int64_t jlo, int64_t jend, double coef, double* gsum, int64_t gld) {
  constexpr int WG = sizeof(VG) / sizeof(T);
  for (int64_t kc = 0; kc < B.dp; kc += MAX_NV * WG) {
    const int64_t nv = std::min<int64_t>(MAX_NV, (B.dp - kc) / WG);
    switch (nv) {
      case 1: tile_grad<T, VG, NR, 1>(A, ib, B, kc, wbuf, j0, jlo, jend, coef, gsum, gld); break;
      default: tile_grad<T, VG, NR, 2>(A, ib, B, kc, wbuf, j0, jlo, jend, coef, gsum, gld); break;
    }
  }
}

template <typename T, int NR>
static void tile_grad_dispatch(const PointSet<T>& A, int64_t ib, const PointSet<T>& B, const T* wbuf,
                               int64_t j0, int64_t jlo, int64_t jend, double coef, double* gsum, int64_t gld) {
  if (B.wide_grad)
    tile_grad_chunks<T, typename Vec<T>::V, NR>(A, ib, B, wbuf, j0, jlo, jend, coef, gsum, gld);
  else
    tile_grad_chunks<T, typename Vec<T>::V3, NR>(A, ib, B, wbuf, j0, jlo, jend, coef, gsum, gld);
}

// One row block (NR rows) against one tile: values, and the gradient sums when GRAD.
template <typename T, int KER, int NR, bool GRAD>
static void row_block(const Problem<T>& P, const PointSet<T>& A, const PointSet<T>& B, Mode mode, int64_t ib,
                      int64_t j0, int64_t jlo, int64_t jhi, double coef, Scratch<T>& S, int64_t row_off,
                      double& value) {
  using V = typename Vec<T>::V;
  V ks = splat<V>(T(0));
  tile_values<T, KER, NR, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, S.wbuf.ptr, ks);
  value += hsum(ks);
  if (GRAD) {
    const int64_t jend = std::min<int64_t>(jhi, B.rows);
    if (jend > jlo) {
      // Stage 3 in sub-blocks of at most 4 rows (accumulators and row coordinates fill the registers).
      constexpr int NG = NR < 4 ? NR : 4;
      static_assert(NR % NG == 0, "row block must split into equal gradient sub-blocks");
      for (int rr = 0; rr < NR; rr += NG)
        tile_grad_dispatch<T, NG>(A, ib + rr, B, S.wbuf.ptr + rr * TILE_COLS, j0, jlo, jend, coef,
                                  S.gsum.ptr + (row_off + rr) * B.dp, B.dp);
    }
  }
}

template <typename T, int KER, bool GRAD>
static double sweep_block(const Problem<T>& P, const PointSet<T>& A, const PointSet<T>& B, Mode mode,
                          int64_t i0, int64_t i1, double coef, Scratch<T>& S) {
  constexpr int W = Vec<T>::W;
  double value = 0.0;
  const int64_t jstart = mode == kTriangle ? (i0 + 1) / W * W : 0;
  for (int64_t j0 = jstart; j0 < B.rows; j0 += TILE_COLS) {
    const int64_t jhi = std::min<int64_t>(j0 + TILE_COLS, round_up(B.rows, W));
    for (int64_t ib = i0, nr = 0; ib < i1; ib += nr) {
      // Row blocks of ROWS_R, then 4, then the 1–3 rows left.
      nr = i1 - ib >= ROWS_R ? ROWS_R : (i1 - ib >= 4 ? 4 : i1 - ib);
      int64_t jlo = j0;
      if (mode == kTriangle) jlo = std::max<int64_t>(j0, (ib + 1) / W * W);
      if (jlo >= jhi) continue;
      const int64_t off = ib - i0;
      switch (nr) {
        case 1: row_block<T, KER, 1, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, coef, S, off, value); break;
        case 2: row_block<T, KER, 2, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, coef, S, off, value); break;
        case 3: row_block<T, KER, 3, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, coef, S, off, value); break;
        case 4: row_block<T, KER, 4, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, coef, S, off, value); break;
        default: row_block<T, KER, ROWS_R, GRAD>(P, A, B, mode, ib, j0, jlo, jhi, coef, S, off, value); break;
      }
    }
  }
  return value;
}

// Runs one task; writes vals[0] = within sum (full, i ≠ j), vals[1] = cross sum, vals[2] = diagonal.
template <typename T, int KER>
static void run_task(const Problem<T>& P, const Task& t, Scratch<T>& S, double* vals) {
  const int s = t.set, o = 1 - s;
  const PointSet<T>& A = P.set[s];
  const PointSet<T>& B = P.set[o];
  const bool grad = P.need_grad[s];
  const int64_t nrows = t.i1 - t.i0;
  if (grad) {
    std::memset(S.gsum.ptr, 0, sizeof(double) * TASK_ROWS * A.dp);
  }
  // Within block.
  if (grad) {
    vals[0] = sweep_block<T, KER, true>(P, A, A, kFull, t.i0, t.i1, P.coef_within[s], S);
  } else {
    vals[0] = 2.0 * sweep_block<T, KER, false>(P, A, A, kTriangle, t.i0, t.i1, 0.0, S);
  }
  // Cross block: rows of x carry the value; rows of y only sweep x when ∂/∂y is wanted.
  vals[1] = 0.0;
  if (s == 0) {
    vals[1] = grad ? sweep_block<T, KER, true>(P, A, B, kCross, t.i0, t.i1, P.coef_cross, S)
                   : sweep_block<T, KER, false>(P, A, B, kCross, t.i0, t.i1, 0.0, S);
  } else if (grad) {
    sweep_block<T, KER, true>(P, A, B, kCross, t.i0, t.i1, P.coef_cross, S);
  }
  // Diagonal k(r_ii) (biased estimator): r_ii is 0 for finite rows and NaN otherwise.
  vals[2] = 0.0;
  if (!P.unbiased) {
    for (int64_t i = t.i0; i < t.i1; ++i) {
      const T* a = A.rp.ptr + i * A.dp;
      T r = 0;
      for (int64_t k = 0; k < P.d; ++k) r += (a[k] - a[k]) * (a[k] - a[k]);
      vals[2] += static_cast<double>(kernel_scalar(P.scales, P.ker, r));
    }
  }
  // Gradient rows: ∂/∂a_i = Σ_blocks coef · Σ_j wpos_ij (a_i − b_j) = −Σ_blocks coef · G_i.
  if (grad) {
    T* out = P.grad_out[s];
    for (int64_t r = 0; r < nrows; ++r) {
      const double* g = S.gsum.ptr + r * A.dp;
      T* dst = out + (t.i0 - P.row_begin[s] + r) * P.d;
      for (int64_t k = 0; k < P.d; ++k) dst[k] = static_cast<T>(-g[k] * P.scale);
    }
  }
}

// The work shared by the workers of one call.
template <typename T>
struct CallWork {
  const Problem<T>* P = nullptr;
  const Task* tasks = nullptr;
  const size_t* order = nullptr;     // task indices, heaviest first
  size_t num_tasks = 0;
  Scratch<T>* const* scratch = nullptr;  // one per worker
  double* vals = nullptr;            // [num_tasks][3]
  std::atomic<size_t> next{0};
};

template <typename T>
static void sweep_worker(void* context, int worker) {
  CallWork<T>& W = *static_cast<CallWork<T>*>(context);
  Scratch<T>& S = *W.scratch[worker];
  for (;;) {
    const size_t idx = W.next.fetch_add(1);
    if (idx >= W.num_tasks) break;
    const size_t ti = W.order[idx];
    if (W.P->ker == static_cast<int>(Kernel::kImq))
      run_task<T, static_cast<int>(Kernel::kImq)>(*W.P, W.tasks[ti], S, W.vals + ti * 3);
    else
      run_task<T, static_cast<int>(Kernel::kRbf)>(*W.P, W.tasks[ti], S, W.vals + ti * 3);
  }
}

template <typename T>
static void fill_nan(T* out, int64_t count) {
  if (out == nullptr) return;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t i = 0; i < count; ++i) out[i] = nan;
}

template <typename T>
static void mmd_fused(const MmdProblem& in, const T* x, const T* y, T* gx, T* gy) {
  const int64_t n = in.n, m = in.m, d = in.d;
  Problem<T> P;
  P.d = d;
  P.ker = static_cast<int>(in.kernel);
  P.unbiased = in.unbiased;
  // Centre (spec.centre) and rescaling (spec.rescale_exponent).
  LocalVector<T> centre(static_cast<size_t>(d));
  const bool fits = centre_and_scale(x, n, y, m, d, RescaleBounds{in.rescale_offset, in.rescale_lower,
                                     in.rescale_upper}, centre.data(), &P.scale);
  P.scales.count = std::min(in.num_bandwidths, kMaxScales);
  for (int q = 0; q < P.scales.count; ++q) {
    const double b = in.bandwidths[q] * P.scale * P.scale;
    P.scales.b[q] = static_cast<T>(b);
    P.scales.ib[q] = static_cast<T>(1.0 / b);
    P.scales.nib[q] = static_cast<T>(-1.0 / b);
  }
  // The swept row ranges (all rows unless the caller gives ranges).
  const int64_t x_begin = in.x_begin, x_end = in.x_end < 0 ? n : in.x_end;
  const int64_t y_begin = in.y_begin, y_end = in.y_end < 0 ? m : in.y_end;
  double nonfinite = fits ? 0.0 : std::numeric_limits<double>::quiet_NaN();
  nonfinite += prepare(P.set[0], x, n, d, centre.data(), static_cast<T>(P.scale));
  nonfinite += prepare(P.set[1], y, m, d, centre.data(), static_cast<T>(P.scale));
  if (nonfinite != 0.0) {  // NaN: some input is NaN or ±Inf, or no rescaling fits
    fill_nan(gx, (x_end - x_begin) * d);
    fill_nan(gy, (y_end - y_begin) * d);
    if (in.block_sums != nullptr)
      for (int q = 0; q < 5; ++q) in.block_sums[q] = std::numeric_limits<double>::quiet_NaN();
    return;
  }

  P.coef_within[0] = in.coef_within_x;
  P.coef_within[1] = in.coef_within_y;
  P.coef_cross = in.coef_cross;
  P.need_grad[0] = gx != nullptr;
  P.need_grad[1] = gy != nullptr;
  P.grad_out[0] = gx;
  P.grad_out[1] = gy;
  P.row_begin[0] = x_begin;
  P.row_begin[1] = y_begin;

  // Tasks, heaviest first (the order only affects load balance, never the result).
  LocalVector<Task> tasks;
  for (int s = 0; s < 2; ++s) {
    const int64_t rows = s == 0 ? n : m, other = s == 0 ? m : n;
    const int64_t begin = s == 0 ? x_begin : y_begin, end = s == 0 ? x_end : y_end;
    for (int64_t i0 = begin; i0 < end; i0 += TASK_ROWS) {
      const int64_t i1 = std::min<int64_t>(i0 + TASK_ROWS, end);
      double cols = P.need_grad[s] ? static_cast<double>(rows) : static_cast<double>(rows - i0);
      if (s == 0 || P.need_grad[s]) cols += static_cast<double>(other) * (P.need_grad[s] ? 1.5 : 1.0);
      tasks.push_back(Task{s, i0, i1, cols * static_cast<double>(i1 - i0)});
    }
  }
  // Insertion sort by decreasing cost, stable: within each set the costs already decrease or tie.
  LocalVector<size_t> order(tasks.size());
  for (size_t i = 0; i < order.size(); ++i) {
    size_t k = i;
    for (; k > 0 && tasks[order[k - 1]].cost < tasks[i].cost; --k) order[k] = order[k - 1];
    order[k] = i;
  }

  double total_cost = 0.0;
  for (const Task& t : tasks) total_cost += t.cost;
  // Roughly 1 ms of single-core work per extra thread before another thread pays for itself.
  const double per_thread = 2.0e6 / static_cast<double>(d + 8);
  int threads = std::max(1, in.threads);
  threads = static_cast<int>(std::min<double>(threads, std::max(1.0, total_cost / per_thread)));
  threads = std::min<int>(threads, static_cast<int>(tasks.size()));
  threads = std::max(threads, 1);

  LocalVector<double> vals(tasks.size() * 3, 0.0);
  const int64_t dp_max = std::max(P.set[0].dp, P.set[1].dp);
  LocalVector<Scratch<T>> scratch_store;
  scratch_store.reserve(static_cast<size_t>(threads));
  LocalVector<Scratch<T>*> scratch;
  for (int t = 0; t < threads; ++t) {
    scratch_store.emplace_back(dp_max);
    scratch.push_back(&scratch_store.back());
  }

  CallWork<T> work;
  work.P = &P;
  work.tasks = tasks.data();
  work.order = order.data();
  work.num_tasks = tasks.size();
  work.scratch = scratch.data();
  work.vals = vals.data();
  run_workers(threads, &sweep_worker<T>, &work);

  // Fixed-order reduction.
  double s_within[2] = {0.0, 0.0}, s_cross = 0.0, s_diag[2] = {0.0, 0.0};
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const int s = tasks[ti].set;
    s_within[s] += vals[ti * 3 + 0];
    s_diag[s] += vals[ti * 3 + 2];
    if (s == 0) s_cross += vals[ti * 3 + 1];
  }
  if (in.block_sums != nullptr) {
    in.block_sums[0] = s_within[0];
    in.block_sums[1] = s_within[1];
    in.block_sums[2] = s_cross;
    in.block_sums[3] = s_diag[0];
    in.block_sums[4] = s_diag[1];
  }
}

}  // namespace

void mmd_fused_f32(const MmdProblem& p, const float* x, const float* y, float* grad_x, float* grad_y) {
  mmd_fused<float>(p, x, y, grad_x, grad_y);
}

void mmd_fused_f64(const MmdProblem& p, const double* x, const double* y, double* grad_x,
                   double* grad_y) {
  mmd_fused<double>(p, x, y, grad_x, grad_y);
}

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
