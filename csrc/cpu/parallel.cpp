// Threads for the CPU kernels (see parallel.h).
#include "cpu/parallel.h"

#include <chrono>
#include <system_error>
#include <thread>
#include <vector>

namespace wae_fast {
namespace cpu {

int run_workers(int workers, void (*work)(void* context, int worker), void* context) {
  std::vector<std::thread> pool;
  if (workers > 1) pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(work, context, w);
    } catch (const std::system_error&) {
      break;  // could not start a thread: run with the ones started
    }
  }
  work(context, 0);
  for (auto& thread : pool) thread.join();
  return static_cast<int>(pool.size()) + 1;
}

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace cpu
}  // namespace wae_fast
