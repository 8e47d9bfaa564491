// Fused CPU kernels for the MMD permutation test (no torch, no Python).
//
// The pooled sample z = [x; y] ([N, d], N = n + m) and P labellings u_p ∈ {0, 1}^N (u_pi = 1: row i
// is an "x" row under labelling p) are given. With K₀ the kernel matrix of z with a zero diagonal,
// the kernels return, for every labelling p,
//
//   within[p]      = u_pᵀ K₀ u_p  = Σ_{i≠j} u_pi u_pj k(z_i, z_j)   (the x–x pair sum of labelling p)
//   member_rows[p] = u_pᵀ K₀ 1    = Σ_{i≠j} u_pi k(z_i, z_j)         (the x rows' sums over every row)
//
// and the total 1ᵀ K₀ 1. The caller (wae_fast/backends/cpu_perm.py through csrc/mmd_perm.cpp) turns them
// into the unbiased statistic of each labelling with spec.estimator_weights:
//   x–x = within,  x–y = member_rows − within,  y–y = total − 2·member_rows + within.
//
// All labellings share one sweep of the kernel matrix: every pair (i < j) is evaluated once and
// applied to all P labellings (K₀·U, U = [u_1 … u_P], tile by tile). Nothing N×N is allocated:
// memory is O(N·d) for the centred copy, the labels (bits, read in place; the AVX-512 float kernel
// also reads one transposed copy), O(P) per task of 128 rows for the results and O(P) scratch per
// thread. Results are bitwise reproducible run to run and
// independent of the thread count. Any NaN or ±Inf in z makes every output NaN.
//
// The kernel source mmd_perm_cpu.cpp is compiled once per instruction-set path, by the thin
// translation units isa_<name>.cpp, into the namespace wae_fast::cpu::<name> (as mmd_cpu.cpp, whose
// k(r) it shares through cpu/kernel_math.h); csrc/mmd_perm.cpp picks the table of the path that runs.
#pragma once

#include <cstdint>

#include "cpu/mmd_cpu.h"

namespace wae_fast {
namespace cpu {

struct PermProblem {
  int64_t rows = 0;                    // N: pooled rows (x then y)
  int64_t d = 0;                       // features
  Kernel kernel = Kernel::kImq;
  const double* bandwidths = nullptr;  // effective bandwidths b_s (positive, finite)
  int num_bandwidths = 0;              // 1 … kMaxScales
  // Labels, one row of label_bytes bytes per labelling: bit (i % 8) of byte i / 8 of row p is u_pi.
  // Bits past row N − 1 must be 0.
  const uint8_t* labels = nullptr;
  int64_t labellings = 0;              // P
  int64_t label_bytes = 0;             // ⌈N / 8⌉
  // spec.rescale_bounds (see MmdProblem).
  int rescale_offset = 0, rescale_lower = -126, rescale_upper = 125;
  int threads = 1;                     // upper bound; small problems use fewer
};

// One compiled instruction-set path of the permutation kernels (same names as IsaPath's).
struct PermPath {
  const char* name;
  // Writes within[0 … P) and member_rows[0 … P); returns 1ᵀ K₀ 1. Sums in double.
  double (*perm_sums_f32)(const PermProblem& p, const float* z, double* within, double* member_rows);
  double (*perm_sums_f64)(const PermProblem& p, const double* z, double* within, double* member_rows);
};

namespace baseline { extern const PermPath kPermPath; }
namespace avx2 { extern const PermPath kPermPath; }
namespace avx512 { extern const PermPath kPermPath; }
namespace native { extern const PermPath kPermPath; }

}  // namespace cpu
}  // namespace wae_fast
