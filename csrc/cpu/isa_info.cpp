// The table of one instruction-set path (IsaPath, mmd_cpu.h): its name, compile flags, vector width
// and instruction set, the CPU features its code may use, and its entry points.
//
// Compiled once per path through csrc/cpu/isa_<name>.cpp. The instruction set and the features are
// read from the compiler's predefined macros, so they describe the flags this path was built with.
#ifndef WAE_FAST_ISA
#error "isa_info.cpp is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif
#ifndef WAE_FAST_ISA_FLAGS
#define WAE_FAST_ISA_FLAGS ""
#endif

#include "cpu/isa_info.h"
#include "cpu/mmd_cpu.h"
#include "cpu/simd.h"

// The instruction set the compiler targeted, as seen by its predefined macros.
#if defined(__AVX512F__)
#define WAE_FAST_SIMD_ISA "AVX-512F"
#elif defined(__AVX2__)
#define WAE_FAST_SIMD_ISA "AVX2"
#elif defined(__AVX__)
#define WAE_FAST_SIMD_ISA "AVX"
#elif defined(__SSE2__)
#define WAE_FAST_SIMD_ISA "SSE2"
#elif defined(__ARM_NEON)
#define WAE_FAST_SIMD_ISA "NEON"
#else
#define WAE_FAST_SIMD_ISA "generic"
#endif
#if defined(__FMA__)
#define WAE_FAST_SIMD_FMA ", FMA"
#else
#define WAE_FAST_SIMD_FMA ""
#endif

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

// The CPU features this path's code may use: those the compiler enabled, among the ones
// dispatch.cpp tests with __builtin_cpu_supports.
const char* const kCpuFeatures[] = {
#if defined(__SSE3__)
    "sse3",
#endif
#if defined(__SSSE3__)
    "ssse3",
#endif
#if defined(__SSE4_1__)
    "sse4.1",
#endif
#if defined(__SSE4_2__)
    "sse4.2",
#endif
#if defined(__POPCNT__)
    "popcnt",
#endif
#if defined(__AVX__)
    "avx",
#endif
#if defined(__AVX2__)
    "avx2",
#endif
#if defined(__FMA__)
    "fma",
#endif
#if defined(__BMI__)
    "bmi",
#endif
#if defined(__BMI2__)
    "bmi2",
#endif
#if defined(__AVX512F__)
    "avx512f",
#endif
#if defined(__AVX512VL__)
    "avx512vl",
#endif
#if defined(__AVX512BW__)
    "avx512bw",
#endif
#if defined(__AVX512DQ__)
    "avx512dq",
#endif
#if defined(__AVX512CD__)
    "avx512cd",
#endif
    nullptr};

}  // namespace

extern const IsaPath kPath = {
    WAE_FAST_ISA_NAME,
    WAE_FAST_ISA_FLAGS,
    WAE_FAST_STR(WAE_FAST_VEC_BITS) "-bit vectors (" WAE_FAST_SIMD_ISA WAE_FAST_SIMD_FMA ")",
    kVecBytes,
    kCpuFeatures,
    &mmd_fused_f32,
    &mmd_fused_f64,
    &peak_fma_gflops,
};

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
