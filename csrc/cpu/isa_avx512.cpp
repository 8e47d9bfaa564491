// The AVX-512 path (x86-64: AVX-512 F/VL/BW/DQ, 512-bit vectors, rcp14 reciprocals).
// Compiled with this path's flags from csrc/build_config.json (see mmd_cpu.h): the path's sources in one
// translation unit, each including what it uses.
#define WAE_FAST_ISA avx512
#include "cpu/mmd_cpu.cpp"
#include "cpu/mmd_perm_cpu.cpp"
#include "cpu/mmd_agg_cpu.cpp"
#include "cpu/peak_fma.cpp"
#include "cpu/isa_info.cpp"
