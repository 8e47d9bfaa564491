// k(r) and wpos(r) = −dk/dr ≥ 0 of one instruction-set path, for all scales at once (see mmd_cpu.h):
//   IMQ  k(r) = Σ_s b_s/(b_s + r),  wpos(r) = Σ_s b_s/(b_s + r)²
//   RBF  k(r) = Σ_s exp(−r/b_s),    wpos(r) = Σ_s exp(−r/b_s)/b_s
// on vectors of distances (kernel_eval; vexp and vrecip are its exp and reciprocal) and on one
// distance (kernel_scalar). Shared by the MMD and the permutation kernels; internal linkage in
// wae_fast::cpu::WAE_FAST_ISA, as cpu/simd.h.
#pragma once

#include <cmath>
#include <cstdint>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu/mmd_cpu.h"
#include "cpu/simd.h"

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

// Vectorisable exp for x ≤ 0 (also correct for x > 0 up to overflow): Cephes range reduction and
// polynomial, ≈1 ulp. x below the smallest normal's log returns 0; NaN in, NaN out.
static inline Vec<float>::V vexp(Vec<float>::V x) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  const V lo = splat<V>(-87.33654475f), hi = splat<V>(88.37626266f);
  V xc = x < lo ? lo : x;  // NaN compares false and stays NaN
  xc = xc > hi ? hi : xc;
  V fx = xc * 1.44269504088896341f;
  fx = (fx + 12582912.0f) - 12582912.0f;  // round to nearest (|fx| < 2^22)
  fx = fx == fx ? fx : splat<V>(0.0f);    // keep the integer conversion defined for NaN
  V r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  V z = r * r;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  I e = __builtin_convertvector(fx, I);
  I bits = (e + 127) << 23;
  p = p * bitcast<V>(bits);
  return x < lo ? splat<V>(0.0f) : p;
}

static inline Vec<double>::V vexp(Vec<double>::V x) {
  using V = Vec<double>::V;
  using I = Vec<double>::I;
  const V lo = splat<V>(-708.3964185322641), hi = splat<V>(709.43613930310391);
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  V px = xc * 1.4426950408889634073599;
  px = (px + 6755399441055744.0) - 6755399441055744.0;
  px = px == px ? px : splat<V>(0.0);
  V r = xc - px * 6.93145751953125e-1;
  r = r - px * 1.42860682030941723212e-6;
  V rr = r * r;
  V pp = ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1) * r;
  V qq = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
         2.00000000000000000009e0;
  V e = pp / (qq - pp);
  e = 1.0 + 2.0 * e;
  I n = __builtin_convertvector(px, I);
  I bits = (n + 1023) << 52;
  e = e * bitcast<V>(bits);
  return x < lo ? splat<V>(0.0) : e;
}

// ---------------------------------------------------------------------------------------------
// k(r) and wpos(r) = −dk/dr ≥ 0 for all scales at once.
template <typename T>
struct Scales {
  int count = 0;
  T b[kMaxScales];    // IMQ: b_s
  T nib[kMaxScales];  // RBF: −1/b_s
  T ib[kMaxScales];   // RBF: 1/b_s
};

// 1/t to within ~1 ulp. With AVX-512: rcp14 (relative error < 2^-14) refined by Newton steps
// (one for float, two for double), a few pipelined FMAs instead of a long-latency, low-throughput
// division. t is r + b ≥ b > 0, or NaN/+Inf (Inf gives NaN here, and the value is NaN anyway
// because a non-finite input is flagged).
static inline Vec<float>::V vrecip(Vec<float>::V t) {
#if defined(__AVX512F__)
  using V = Vec<float>::V;
  V q = bitcast<V>(_mm512_maskz_rcp14_ps(0xFFFF, bitcast<__m512>(t)));
  V e = 1.0f - t * q;
  return q + q * e;
#else
  return 1.0f / t;
#endif
}
static inline Vec<double>::V vrecip(Vec<double>::V t) {
#if defined(__AVX512F__)
  using V = Vec<double>::V;
  V q = bitcast<V>(_mm512_maskz_rcp14_pd(0xFF, bitcast<__m512d>(t)));
  V e = 1.0 - t * q;
  q = q + q * e;
  e = 1.0 - t * q;
  return q + q * e;
#else
  return 1.0 / t;
#endif
}

// k(r) and wpos(r) = −dk/dr ≥ 0 of NR distance vectors, all scales; scales outer, rows inner, so the
// NR evaluations are independent and pipeline.
template <typename T, int KER, int NR>
static inline void kernel_eval(const Scales<T>& s, const typename Vec<T>::V* r, typename Vec<T>::V* kv,
                               typename Vec<T>::V* wv) {
  using V = typename Vec<T>::V;
  for (int i = 0; i < NR; ++i) kv[i] = wv[i] = splat<V>(T(0));
  for (int q = 0; q < s.count; ++q) {
    if (KER == static_cast<int>(Kernel::kImq)) {
      const T b = s.b[q];
      for (int i = 0; i < NR; ++i) {
        V inv = vrecip(r[i] + b);
        V bq = b * inv;
        kv[i] += bq;
        wv[i] += bq * inv;
      }
    } else {
      const T nib = s.nib[q], ib = s.ib[q];
      for (int i = 0; i < NR; ++i) {
        V e = vexp(r[i] * nib);
        kv[i] += e;
        wv[i] += e * ib;
      }
    }
  }
}

template <typename T>
static inline T kernel_scalar(const Scales<T>& s, int ker, T r) {
  T k = 0;
  for (int q = 0; q < s.count; ++q) k += ker == 0 ? s.b[q] / (s.b[q] + r) : std::exp(r * s.nib[q]);
  return k;
}

}  // namespace
}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
