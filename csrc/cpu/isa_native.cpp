// The -march=native path, built only when WAE_FAST_NATIVE=1: the building machine's full
// instruction set; the only path of such a build, which may not run on another CPU.
// Compiled with this path's flags from csrc/build_config.json (see mmd_cpu.h): the path's sources in one
// translation unit, each including what it uses.
#define WAE_FAST_ISA native
#include "cpu/mmd_cpu.cpp"
#include "cpu/mmd_perm_cpu.cpp"
#include "cpu/mmd_agg_cpu.cpp"
#include "cpu/peak_fma.cpp"
#include "cpu/isa_info.cpp"
