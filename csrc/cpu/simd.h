// Vector types and helpers of one instruction-set path: GCC/Clang vector extensions of the path's
// width (WAE_FAST_VEC_BITS), broadcast, unaligned load/store, bit casts, horizontal sums, 64-byte
// aligned buffers and a translation-unit-local allocator.
//
// Included by the kernel sources of a path (mmd_cpu.cpp, mmd_perm_cpu.cpp, mmd_agg_cpu.cpp, peak_fma.cpp), which
// csrc/cpu/isa_<name>.cpp compiles with that path's flags and WAE_FAST_ISA set to its name. Everything
// here lives in wae_fast::cpu::WAE_FAST_ISA and has internal linkage (an anonymous namespace;
// containers use LocalAllocator), so that no out-of-line code compiled with one path's flags can be
// shared with another path.
#pragma once

#ifndef WAE_FAST_ISA
#error "cpu/simd.h is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif
#if !defined(__GNUC__)
#error "wae_fast's CPU kernels use GCC/Clang vector extensions; build with g++ or clang++"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#define WAE_FAST_VEC_BITS 512
#elif defined(__AVX__)
#define WAE_FAST_VEC_BITS 256
#else
#define WAE_FAST_VEC_BITS 128
#endif

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

constexpr int kVecBytes = WAE_FAST_VEC_BITS / 8;
// Stage 3 vectorises over the feature dimension; 256-bit vectors waste fewer lanes at small d.
constexpr int kVec3Bytes = kVecBytes < 32 ? kVecBytes : 32;

// An allocator type local to this translation unit: containers of it are instantiated with internal
// linkage, so this path's copy of their code cannot stand in for another path's (see the top).
template <typename T>
struct LocalAllocator {
  typedef T value_type;
  LocalAllocator() = default;
  template <typename U>
  LocalAllocator(const LocalAllocator<U>&) noexcept {}
  T* allocate(size_t count) { return static_cast<T*>(::operator new(count * sizeof(T))); }
  void deallocate(T* ptr, size_t) noexcept { ::operator delete(ptr); }
  template <typename U>
  bool operator==(const LocalAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const LocalAllocator<U>&) const noexcept { return false; }
};
template <typename T>
using LocalVector = std::vector<T, LocalAllocator<T>>;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef int32_t I __attribute__((vector_size(kVecBytes)));
  typedef int32_t Lane;
  typedef float V3 __attribute__((vector_size(kVec3Bytes)));
  static constexpr int W = kVecBytes / 4;
  static constexpr int W3 = kVec3Bytes / 4;
};
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef int64_t I __attribute__((vector_size(kVecBytes)));
  typedef int64_t Lane;
  typedef double V3 __attribute__((vector_size(kVec3Bytes)));
  static constexpr int W = kVecBytes / 8;
  static constexpr int W3 = kVec3Bytes / 8;
};

template <typename VT, typename T, size_t... Is>
static inline VT splat_impl(T s, std::index_sequence<Is...>) {
  return VT{((void)Is, s)...};
}
// A broadcast. (VT{} + s would add +0.0 first; a lane-by-lane loop compiles to lane inserts.)
template <typename VT, typename T>
static inline VT splat(T s) {
  return splat_impl<VT, T>(s, std::make_index_sequence<sizeof(VT) / sizeof(T)>{});
}
template <typename VT, typename T>
static inline VT loadv(const T* p) {
  VT v;
  std::memcpy(&v, p, sizeof(VT));
  return v;
}
template <typename VT, typename T>
static inline void storev(T* p, VT v) {
  std::memcpy(p, &v, sizeof(VT));
}
template <typename To, typename From>
static inline To bitcast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bitcast between different sizes");
  To t;
  std::memcpy(&t, &v, sizeof(To));
  return t;
}
template <typename VT>
static inline double hsum(VT v) {
  constexpr int L = sizeof(VT) / sizeof(v[0]);
  double s = 0.0;
  for (int l = 0; l < L; ++l) s += static_cast<double>(v[l]);
  return s;
}

template <typename T>
struct AlignedBuf {
  T* ptr = nullptr;
  size_t count = 0;
  AlignedBuf() = default;
  explicit AlignedBuf(size_t c) : count(c) {
    ptr = static_cast<T*>(::operator new[](std::max<size_t>(c, 1) * sizeof(T), std::align_val_t(64)));
    std::memset(static_cast<void*>(ptr), 0, std::max<size_t>(c, 1) * sizeof(T));
  }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  AlignedBuf(AlignedBuf&& o) noexcept : ptr(o.ptr), count(o.count) { o.ptr = nullptr; }
  AlignedBuf& operator=(AlignedBuf&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(count, o.count);
    return *this;
  }
  ~AlignedBuf() {
    if (ptr) ::operator delete[](ptr, std::align_val_t(64));
  }
};

static inline int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

}  // namespace
}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
