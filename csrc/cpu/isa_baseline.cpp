// The baseline path: the compiler's default target (SSE2 on x86-64), runs on any CPU of the architecture.
// Compiled with this path's flags from csrc/build_config.json (see mmd_cpu.h): the path's sources in one
// translation unit, each including what it uses.
#define WAE_FAST_ISA baseline
#include "cpu/mmd_cpu.cpp"
#include "cpu/mmd_perm_cpu.cpp"
#include "cpu/mmd_agg_cpu.cpp"
#include "cpu/peak_fma.cpp"
#include "cpu/isa_info.cpp"
