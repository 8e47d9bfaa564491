// Fused CPU kernels for the aggregated MMD tests (MMD-FUSE, MMDAgg): S kernels × P labellings in one
// sweep (no torch, no Python).
//
// The pooled sample z = [x; y] ([N, d], N = n + m), S single-scale kernels k_s (a kernel id and one
// bandwidth each) and P labellings u_p ∈ {0, 1}^N are given. With K₀ˢ the kernel matrix of z under
// k_s with a zero diagonal, the kernels return, for every kernel s and labelling p,
//
//   within[s][p]      = u_pᵀ K₀ˢ u_p        member_rows[s][p] = u_pᵀ K₀ˢ 1
//   total[s]          = 1ᵀ K₀ˢ 1            squares[s]        = Σ_{i≠j} k_s(z_i, z_j)²
//
// (wae_fast/backends/cpu_agg.py through csrc/mmd_agg.cpp; the statistics follow as in
// wae_fast/stats/aggregate.py). Every pair i < j is evaluated once: its squared distance is shared by
// the S kernels, and each kernel's value is applied to all P labellings by the permutation test's
// table look-up (mmd_perm_cpu.cpp). Nothing N×N is allocated: memory is O(N·d) for the centred copy,
// the labels (the AVX-512 float kernel also reads one transposed copy), O(S·P) for each of at most 64
// result slots and O(S·P) scratch per thread. Results are bitwise reproducible run to run and
// independent of the thread count. Any NaN or ±Inf in z, or no rescaling 2^−E that fits, makes every
// output NaN.
//
// The kernel source mmd_agg_cpu.cpp is compiled once per instruction-set path, included by each
// isa_<name>.cpp after mmd_perm_cpu.cpp (whose pooled layouts, tiles and look-ups it uses), into the
// namespace wae_fast::cpu::<name>; csrc/mmd_agg.cpp picks the table of the path that runs.
#pragma once

#include <cstdint>

#include "cpu/mmd_cpu.h"

namespace wae_fast {
namespace cpu {

struct AggProblem {
  int64_t rows = 0;                    // N: pooled rows (x then y)
  int64_t d = 0;                       // features
  const int* kernels = nullptr;        // Kernel ids, one per kernel s
  const double* bandwidths = nullptr;  // its bandwidth b_s (positive, finite)
  int num_kernels = 0;                 // S: 1 … kMaxScales
  // Labels, as PermProblem's: one row of label_bytes bytes per labelling, bit (i % 8) of byte i / 8 of
  // row p is u_pi; bits past row N − 1 must be 0.
  const uint8_t* labels = nullptr;
  int64_t labellings = 0;              // P
  int64_t label_bytes = 0;             // ⌈N / 8⌉
  // spec.rescale_bounds of all the bandwidths (see MmdProblem): z centred is multiplied by 2^−E and
  // every bandwidth by 2^−2E.
  int rescale_offset = 0, rescale_lower = -126, rescale_upper = 125;
  int threads = 1;                     // upper bound; small problems use fewer
};

// One compiled instruction-set path of the aggregated tests' kernels (same names as IsaPath's).
struct AggPath {
  const char* name;
  // Writes within[s * P + p], member_rows[s * P + p], total[s] and squares[s]. Sums in double.
  void (*agg_sums_f32)(const AggProblem& p, const float* z, double* within, double* member_rows, double* total,
                       double* squares);
  void (*agg_sums_f64)(const AggProblem& p, const double* z, double* within, double* member_rows, double* total,
                       double* squares);
};

namespace baseline { extern const AggPath kAggPath; }
namespace avx2 { extern const AggPath kAggPath; }
namespace avx512 { extern const AggPath kAggPath; }
namespace native { extern const AggPath kAggPath; }

}  // namespace cpu
}  // namespace wae_fast
