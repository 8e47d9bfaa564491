// Threads for the CPU kernels, compiled once with the baseline flags.
//
// The per-instruction-set kernel code (isa_<name>.cpp) uses these instead of std::thread, so that
// it defines no out-of-line standard-library code of its own: a shared inline function compiled
// with AVX-512 flags could otherwise be the one the linker keeps and run on a CPU without AVX-512.
#pragma once

namespace wae_fast {
namespace cpu {

// Calls work(context, worker) once on each of `workers` threads, the calling thread being worker 0,
// and returns when all have returned. If a thread cannot be started, fewer workers run: returns how
// many did (their indices are 0 … count − 1). `work` must not throw.
int run_workers(int workers, void (*work)(void* context, int worker), void* context);

// A monotonic clock, in seconds.
double monotonic_seconds();

}  // namespace cpu
}  // namespace wae_fast
