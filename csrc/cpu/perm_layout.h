// The permutation kernels' shared layouts of one instruction-set path: the pooled rows, centred and
// rescaled (cpu/rescale.h), in two layouts (Pooled, prepare_pooled), the tile shapes of the subset-sum
// look-ups (PermShape and the AVX-512 float kernels' X16_* sizes), the tasks, a row block's label bits,
// and which kernel a type takes. Included by mmd_perm_cpu.cpp (the permutation test) and mmd_agg_cpu.cpp
// (the aggregated tests). Everything here lives in wae_fast::cpu::WAE_FAST_ISA with internal linkage
// (see cpu/simd.h).
#pragma once

#ifndef WAE_FAST_ISA
#error "cpu/perm_layout.h is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/rescale.h"
#include "cpu/simd.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the permutation kernels read label bytes as little-endian 64-bit words");

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

#ifndef WAE_FAST_PERM_TABLE_BYTES
#define WAE_FAST_PERM_TABLE_BYTES 16384
#endif
constexpr int PERM_TASK_ROWS = 128;        // rows per task: a multiple of every vector width and of 8
constexpr int kPermTableBytes = WAE_FAST_PERM_TABLE_BYTES;  // the subset-sum tables of one tile

template <typename T>
struct PermShape {
  typedef typename Vec<T>::V V;
  typedef typename Vec<T>::I I;
  typedef typename Vec<T>::Lane Lane;
  static constexpr int W = Vec<T>::W;  // rows per row block
  static constexpr int TILE = kPermTableBytes / (4 * static_cast<int>(sizeof(V)));  // columns per tile
  static constexpr int GROUPS = TILE / 4;   // 4-column groups (label nibbles) per tile
  static constexpr int WORDS = TILE / 64;   // 64-bit label words per tile
  static_assert(TILE % 64 == 0 && PERM_TASK_ROWS % W == 0 && PERM_TASK_ROWS % 8 == 0, "tile sizes");
};

// The pooled rows, centred, in the two layouts the kernels read.
template <typename T>
struct Pooled {
  int64_t rows = 0, d = 0;
  AlignedBuf<T> rp;   // [rows][d] row-major
  AlignedBuf<T> soa;  // [⌈rows / W⌉][d][W] packed panels, zero padded
};

// Centres z on the mean of its rows and rescales it by 2^−E (cpu/rescale.h; the bandwidths are rescaled by
// the caller) and fills both layouts. Returns 0, or NaN when some entry of z is NaN or ±Inf or no E fits.
template <typename T>
static double prepare_pooled(Pooled<T>& s, const T* z, int64_t rows, int64_t d, const RescaleBounds& bounds,
                             double* scale) {
  constexpr int64_t W = PermShape<T>::W;
  s.rows = rows;
  s.d = d;
  s.rp = AlignedBuf<T>(static_cast<size_t>(rows * d));
  s.soa = AlignedBuf<T>(static_cast<size_t>(round_up(rows, W) * d));
  LocalVector<T> centre(static_cast<size_t>(d));
  const bool fits = centre_and_scale<T>(z, rows, z, 0, d, bounds, centre.data(), scale);
  const T factor = static_cast<T>(*scale);
  double nonfinite = fits ? 0.0 : std::numeric_limits<double>::quiet_NaN();
  for (int64_t i = 0; i < rows; ++i) {
    T flag = 0;
    for (int64_t k = 0; k < d; ++k) {
      const T v = z[i * d + k];
      flag += v - v;
      const T c = v * factor - centre[k];
      s.rp.ptr[i * d + k] = c;
      s.soa.ptr[(i / W) * d * W + k * W + (i % W)] = c;
    }
    nonfinite += static_cast<double>(flag);
  }
  return nonfinite;
}

struct PermTask {
  int64_t i0, i1;  // row range
  double cost;
};

// The AVX-512 float kernels (perm_task_x16, agg_task_x16): row blocks of X16_ROWS rows, tiles of X16_TILE columns, the
// tables of one tile X16_ROWS × X16_GROUPS × 16 floats (16 KiB), 16 labellings per vector.
#ifndef WAE_FAST_X16_ROWS
#define WAE_FAST_X16_ROWS 8
#endif
#ifndef WAE_FAST_X16_TILE
#define WAE_FAST_X16_TILE 128
#endif
constexpr int X16_ROWS = WAE_FAST_X16_ROWS;
constexpr int X16_TILE = WAE_FAST_X16_TILE;
constexpr int X16_GROUPS = X16_TILE / 4;
constexpr int X16_LANES = 16;

// The bits of rows ib … ib + W − 1 (ib a multiple of W) in labelling row `lab`.
template <int W>
static inline uint32_t row_bits(const uint8_t* lab, int64_t label_bytes, int64_t ib) {
  const int64_t byte = ib / 8;
  if (W < 8) return (static_cast<uint32_t>(lab[byte]) >> (ib % 8)) & ((1u << W) - 1u);
  uint32_t bits = 0;
  for (int b = 0; b < W / 8 && byte + b < label_bytes; ++b) bits |= static_cast<uint32_t>(lab[byte + b]) << (8 * b);
  return bits;
}

// Whether this path runs the AVX-512 float kernel for element type T.
template <typename T>
constexpr bool uses_x16() {
#if defined(__AVX512F__)
  return std::is_same<T, float>::value;
#else
  return false;
#endif
}

}  // namespace
}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
