// The peak multiply-add rate of one instruction-set path (IsaPath::peak_fma_gflops, mmd_cpu.h):
// independent chains acc = acc · a + b on full-width vectors held in registers (one FMA each where
// the path has FMA, a multiply and an add otherwise), enough chains to cover the latency of two
// pipelined units, one chain set per thread. 2 flops per lane per step.
//
// Compiled once per path through csrc/cpu/isa_<name>.cpp, with the flags of that path's kernels.
#ifndef WAE_FAST_ISA
#error "peak_fma.cpp is compiled through csrc/cpu/isa_<name>.cpp, which defines WAE_FAST_ISA"
#endif

#include <algorithm>
#include <cstdint>
#include <limits>

#include "cpu/isa_info.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"

namespace wae_fast {
namespace cpu {
namespace WAE_FAST_ISA {
namespace {

template <typename T>
struct ProbeWork {
  double deadline = 0.0;   // monotonic_seconds() at which every worker stops
  T multiplier = T(0.5), addend = T(0.5);  // acc → 1: no overflow, no subnormals
  int64_t steps[1024] = {};  // per worker: chain steps done (each a vector multiply-add per chain)
  double start[1024] = {}, end[1024] = {};
  T sink[1024] = {};
};

// Accumulators: 32 vector registers with AVX-512, 16 otherwise; two hold a and b.
constexpr int kProbeChains = kVecBytes == 64 ? 24 : 12;
constexpr int kProbeSteps = 4096;  // steps between clock reads

template <typename T>
static void probe_worker(void* context, int worker) {
  typedef T V __attribute__((vector_size(kVecBytes)));
  ProbeWork<T>& W = *static_cast<ProbeWork<T>*>(context);
  const V a = splat<V>(W.multiplier), b = splat<V>(W.addend);
  V acc[kProbeChains];
  for (int c = 0; c < kProbeChains; ++c) acc[c] = splat<V>(static_cast<T>(c));
  int64_t steps = 0;
  const double start = monotonic_seconds();
  double now = start;
  do {
    for (int it = 0; it < kProbeSteps; ++it) {
#pragma GCC unroll 32
      for (int c = 0; c < kProbeChains; ++c) acc[c] = acc[c] * a + b;
    }
    steps += kProbeSteps;
    now = monotonic_seconds();
  } while (now < W.deadline);
  V total = acc[0];
  for (int c = 1; c < kProbeChains; ++c) total += acc[c];
  W.sink[worker] = static_cast<T>(hsum(total));
  W.steps[worker] = steps;
  W.start[worker] = start;
  W.end[worker] = now;
}

template <typename T>
static double probe_gflops(int threads, double seconds) {
  threads = std::max(1, std::min(threads, 1024));
  // Heap: the per-worker arrays are large for a stack frame.
  LocalVector<ProbeWork<T>> holder(1);
  ProbeWork<T>& work = holder[0];
  work.deadline = monotonic_seconds() + seconds;
  const int ran = run_workers(threads, &probe_worker<T>, &work);
  double first = work.start[0], last = work.end[0], flops = 0.0;
  constexpr int lanes = kVecBytes / static_cast<int>(sizeof(T));
  for (int w = 0; w < ran; ++w) {
    first = std::min(first, work.start[w]);
    last = std::max(last, work.end[w]);
    flops += 2.0 * lanes * kProbeChains * static_cast<double>(work.steps[w]);
  }
  // Every chain converges to 1; the check keeps the chains' results alive.
  for (int w = 0; w < ran; ++w)
    if (!(work.sink[w] > T(0))) return std::numeric_limits<double>::quiet_NaN();
  // Workers that overlapped only in part are counted over the whole span: a lower bound.
  return flops / (last - first) * 1e-9;
}

}  // namespace

double peak_fma_gflops(int threads, double seconds, bool f64) {
  return f64 ? probe_gflops<double>(threads, seconds) : probe_gflops<float>(threads, seconds);
}

}  // namespace WAE_FAST_ISA
}  // namespace cpu
}  // namespace wae_fast
