// Fused CPU kernels for the kernel MMD² and its input gradients (no torch, no Python).
//
//   MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k − 2/(nm) Σ_{i,j} k(x_i, y_j)
//   unbiased: a_xx = 1/(n(n−1)), a_yy = 1/(m(m−1)), diagonal excluded;  biased: 1/n², 1/m², kept.
//   k(r) = Σ_b b/(b + r)  (IMQ)   or   Σ_b exp(−r/b)  (RBF),   r = ||a − b||²,  w = dk/dr.
//   ∂/∂x_i = 4 a_xx Σ_j w(x_i,x_j)(x_i − x_j) − 4/(nm) Σ_j w(x_i,y_j)(x_i − y_j)   (and for y).
//
// Inputs are contiguous row-major [n, d] and [m, d] buffers; the gradients, when their pointer is
// not null, are written in full (every one of the n·d / m·d entries). Nothing n×m is allocated:
// the work is tiled, memory is O((n + m)·d) for centred/transposed copies plus fixed-size scratch.
// Results are bitwise reproducible run to run and independent of the thread count.
#pragma once

#include <cstdint>
#include <string>

namespace wae_fast {
namespace cpu {

enum class Kernel : int { kImq = 0, kRbf = 1 };

struct MmdProblem {
  int64_t n = 0;                       // rows of x
  int64_t m = 0;                       // rows of y
  int64_t d = 0;                       // features
  Kernel kernel = Kernel::kImq;
  const double* bandwidths = nullptr;  // effective bandwidths b_s (positive, finite)
  int num_bandwidths = 0;
  bool unbiased = true;                // requires n ≥ 2 and m ≥ 2
  int threads = 1;                     // upper bound; small problems use fewer
};

// Returns MMD² (as double; accumulated in double). grad_x / grad_y may be null (not computed).
double mmd_fused_f32(const MmdProblem& p, const float* x, const float* y, float* grad_x, float* grad_y);
double mmd_fused_f64(const MmdProblem& p, const double* x, const double* y, double* grad_x,
                     double* grad_y);

// How the kernels were compiled: SIMD width in bytes and the instruction set macros seen.
std::string simd_description();
int simd_bytes();

}  // namespace cpu
}  // namespace wae_fast
