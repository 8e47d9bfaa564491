// The instruction-set path being compiled: its name, and the entry points that isa_info.cpp puts into
// its table kPath (IsaPath, mmd_cpu.h).
//
// csrc/cpu/isa_<name>.cpp defines WAE_FAST_ISA (the path's name, also its namespace) and compiles the
// path's sources (mmd_cpu.cpp, mmd_perm_cpu.cpp, peak_fma.cpp, isa_info.cpp) with the path's flags in
// one translation unit. The entry points and the tables have external linkage in
// wae_fast::cpu::WAE_FAST_ISA; everything else there is internal (see cpu/simd.h).
#pragma once

#ifndef WAE_FAST_ISA
#error "cpu/isa_info.h is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include "cpu/mmd_cpu.h"

#define WAE_FAST_STR2(x) #x
#define WAE_FAST_STR(x) WAE_FAST_STR2(x)
// The path's name as a C string: "baseline", "avx2", "avx512" or "native".
#define WAE_FAST_ISA_NAME WAE_FAST_STR(WAE_FAST_ISA)

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {

// MMD² and its gradients (mmd_cpu.cpp): IsaPath::mmd_f32 / mmd_f64.
void mmd_fused_f32(const MmdProblem& p, const float* x, const float* y, float* grad_x, float* grad_y);
void mmd_fused_f64(const MmdProblem& p, const double* x, const double* y, double* grad_x, double* grad_y);

// The peak multiply-add rate (peak_fma.cpp): IsaPath::peak_fma_gflops.
double peak_fma_gflops(int threads, double seconds, bool f64);

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
