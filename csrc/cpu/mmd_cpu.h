// Fused CPU kernels for the kernel MMD² and its input gradients (no torch, no Python).
//
// The maths is wae_fast/spec.py's; the caller (wae_fast/backends/cpu.py through csrc/mmd.cpp) passes
// what the spec computes: the kernel id, the estimator weights and the gradient coefficients.
//
//   MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k + a_xy Σ_{i,j} k(x_i, y_j)
//   k(r) = Σ_s b_s/(b_s + r) (IMQ)  or  Σ_s exp(−r/b_s) (RBF),  r = ‖a − b‖²,  wpos = −dk/dr ≥ 0
//   ∂MMD²/∂a_i = Σ_blocks coef_block · Σ_j wpos(r_ij) (a_i − b_j)
//   unbiased: the diagonal i = j is left out of the within blocks; biased: kept (k(0) = S each).
//
// Inputs are contiguous row-major [n, d] and [m, d] buffers; the gradients, when their pointer is
// not null, are written in full (every one of the n·d / m·d entries, or of the rows of the swept
// ranges when MmdProblem gives row ranges). Nothing n×m is allocated:
// the work is tiled, memory is O((n + m)·d) for centred/transposed copies plus fixed-size scratch.
// Results are bitwise reproducible run to run and independent of the thread count. Any NaN or ±Inf
// in x or y makes the value and every gradient entry NaN.
//
// The kernel source (mmd_cpu.cpp, with the peak probe peak_fma.cpp and the path's table isa_info.cpp)
// is compiled once per instruction-set path, by the thin translation units isa_<name>.cpp, each into
// its own namespace wae_fast::cpu::<name> and with its own flags; dispatch.cpp picks one path at import.
#pragma once

#include <cstdint>

#ifndef WAE_FAST_MAX_SCALES
#error "WAE_FAST_MAX_SCALES (MAX_SCALES of wae_fast/spec.py) must be defined by the build"
#endif

namespace wae_fast {
namespace cpu {

// At most this many scales (bandwidths) per call: spec.MAX_SCALES.
constexpr int kMaxScales = WAE_FAST_MAX_SCALES;

// Kernel ids: spec.KERNEL_IDS.
enum class Kernel : int { kImq = 0, kRbf = 1 };

// How a block of pairs is swept: spec.Sweep.
enum class Mode : int {
  kCross = 0,     // rows of one set against every row of the other
  kFull = 1,      // rows of a set against every other row of the same set (i ≠ j)
  kTriangle = 2,  // rows of a set against the rows after them (j > i); the sum counts twice
};

struct MmdProblem {
  int64_t n = 0;                       // rows of x
  int64_t m = 0;                       // rows of y
  int64_t d = 0;                       // features
  Kernel kernel = Kernel::kImq;
  const double* bandwidths = nullptr;  // effective bandwidths b_s (positive, finite)
  int num_bandwidths = 0;              // 1 … kMaxScales
  bool unbiased = true;                // leave the diagonal out (requires n ≥ 2 and m ≥ 2)
  // spec.estimator_weights: the weights of the x–x, y–y and x–y pair sums.
  double a_xx = 0.0, a_yy = 0.0, a_xy = 0.0;
  // spec.gradient_coefficients: the per-block factors of Σ_j wpos_ij (a_i − b_j).
  double coef_within_x = 0.0, coef_within_y = 0.0, coef_cross = 0.0;
  // spec.rescale_bounds: the centred data are multiplied by 2^−E and the bandwidths by 2^−2E, with
  // E = clamp(e_spread, max(rescale_lower, e_spread − rescale_offset), rescale_upper) and e_spread the
  // frexp exponent of the largest centred |coordinate|; no such E makes everything NaN.
  int rescale_offset = 0, rescale_lower = -126, rescale_upper = 125;
  int threads = 1;                     // upper bound; small problems use fewer
  // Row ranges (the distributed statistic: each process sweeps a range of the gathered rows against
  // all columns). Only rows [x_begin, x_end) of x and [y_begin, y_end) of y own tasks; an end below 0
  // means the last row. grad_x / grad_y then hold (x_end − x_begin) / (y_end − y_begin) rows, the
  // first being row x_begin / y_begin. The defaults sweep every row, as a single-process call.
  int64_t x_begin = 0, x_end = -1;
  int64_t y_begin = 0, y_end = -1;
  // When not null, receives the range's five raw block sums (NaN for non-finite inputs):
  //   [0] Σ k(x_i, x_j) over the swept x rows i and all j ≠ i (with ∂/∂x), or twice the sum over
  //       j > i (without: the TRIANGLE sweep); over ranges covering every row, Σ_{i≠j} k(x_i, x_j)
  //   [1] the same for y,  [2] Σ k(x_i, y_j) over the swept x rows i and all j,
  //   [3] Σ k(x_i, x_i) over the swept x rows (biased estimator only, else 0),  [4] the same for y.
  double* block_sums = nullptr;
};

// One compiled instruction-set path of the kernels.
struct IsaPath {
  const char* name;            // "baseline", "avx2", "avx512" or "native"
  const char* flags;           // the compile flags wae_fast's build gave this path
  const char* simd;            // the vector width and instruction set the compiler targeted
  int simd_bytes;              // vector width of the kernels, in bytes
  const char* const* cpu_features;  // CPU features the compiler was allowed to use, among those
                                   // dispatch.cpp can test (null-terminated)
  // The block sums to p.block_sums and the gradients; grad_x / grad_y may be null (not computed).
  void (*mmd_f32)(const MmdProblem& p, const float* x, const float* y, float* grad_x, float* grad_y);
  void (*mmd_f64)(const MmdProblem& p, const double* x, const double* y, double* grad_x, double* grad_y);
  // Peak multiply-add rate of this path's vectors in GFLOP/s (2 flops per FMA lane), measured on
  // `threads` threads for about `seconds`; double precision when f64.
  double (*peak_fma_gflops)(int threads, double seconds, bool f64);
};

// Each isa_<name>.cpp defines its path; dispatch.cpp references only the ones the build compiled.
namespace baseline { extern const IsaPath kPath; }
namespace avx2 { extern const IsaPath kPath; }
namespace avx512 { extern const IsaPath kPath; }
namespace native { extern const IsaPath kPath; }

}  // namespace cpu
}  // namespace wae_fast
