// The AVX-512 path (x86-64: AVX-512 F/VL/BW/DQ, 512-bit vectors, rcp14 reciprocals).
// Compiled with this path's flags from csrc/build_config.json (see mmd_cpu.h).
#define WAE_FAST_ISA avx512
#include "cpu/mmd_cpu.cpp"
#include "cpu/mmd_perm_cpu.cpp"
#include "cpu/mmd_agg_cpu.cpp"
