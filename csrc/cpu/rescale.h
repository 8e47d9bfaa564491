// The common centre and the rescaling of the points a kernel reads (spec.centre, spec.rescale_exponent):
// the mean of all rows in double, and the power of two 2^−E by which the centred data are multiplied
// (the bandwidths by 2^−2E) so that every distance and bandwidth stays inside the compute type. Shared
// by the MMD and the permutation kernels; internal linkage in wae_fast::cpu::WAE_FAST_ISA, as cpu/simd.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/simd.h"

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

// spec.rescale_bounds, computed by the caller from the bandwidths, d and the compute type.
struct RescaleBounds {
  int offset = 0, lower = -126, upper = 125;
};

// The centre times 2^−E in T (``centre``, [d]) and 2^−E (``scale``) of the rows of up to two sets; false
// when no E fits (then the caller's results are NaN). Non-finite inputs leave a finite centre (a
// non-finite mean becomes 0) and are reported by the copies.
template <typename T>
static bool centre_and_scale(const T* a, int64_t rows_a, const T* b, int64_t rows_b, int64_t d,
                             const RescaleBounds& bounds, T* centre, double* scale) {
  LocalVector<double> mean(static_cast<size_t>(d), 0.0);
  LocalVector<double> high(static_cast<size_t>(d), -std::numeric_limits<double>::infinity());
  LocalVector<double> low(static_cast<size_t>(d), std::numeric_limits<double>::infinity());
  for (int set = 0; set < 2; ++set) {
    const T* src = set == 0 ? a : b;
    const int64_t rows = set == 0 ? rows_a : rows_b;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = 0; k < d; ++k) {
        const double v = static_cast<double>(src[i * d + k]);
        mean[k] += v;
        high[k] = std::max(high[k], v);
        low[k] = std::min(low[k], v);
      }
  }
  double spread = 0.0;  // the largest centred |coordinate|
  for (int64_t k = 0; k < d; ++k) {
    const double c = mean[k] / static_cast<double>(rows_a + rows_b);
    mean[k] = std::isfinite(c) ? c : 0.0;
    spread = std::max(spread, std::max(high[k] - mean[k], mean[k] - low[k]));
  }
  int e_spread = 0;
  if (spread > 0.0 && std::isfinite(spread)) std::frexp(spread, &e_spread);
  const int lower = std::max(bounds.lower, e_spread - bounds.offset);
  const bool fits = lower <= bounds.upper;
  const int exponent = fits ? std::min(std::max(e_spread, lower), bounds.upper) : 0;
  *scale = std::ldexp(1.0, -exponent);
  for (int64_t k = 0; k < d; ++k) centre[k] = static_cast<T>(mean[k] * *scale);
  return fits;
}

}  // namespace
}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
