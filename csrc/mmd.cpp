// pybind11 bindings for wae_fast._C: argument checks, then the CPU kernels in cpu/mmd_cpu.cpp.
//
// The module does not include or link any torch header: it works on raw float32/float64 buffers
// whose addresses are passed as integers (tensor.data_ptr()). The Python launcher
// (wae_fast/backends/cpu.py) guarantees that the buffers are contiguous, on the CPU, of the stated
// dtype and shapes, and alive for the duration of the call. The GIL is released while computing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu/mmd_cpu.h"

#ifndef WAE_FAST_VERSION
#define WAE_FAST_VERSION "unknown"
#endif
#ifndef WAE_FAST_BUILD_FLAGS
#define WAE_FAST_BUILD_FLAGS ""
#endif

namespace py = pybind11;

namespace {

constexpr int kMaxBandwidths = 64;

double mmd_fused(const std::string& dtype, std::uintptr_t x, std::uintptr_t y, int64_t n, int64_t m,
                 int64_t d, const std::string& kernel, const std::vector<double>& bandwidths,
                 bool unbiased, std::uintptr_t grad_x, std::uintptr_t grad_y, int threads) {
  if (dtype != "float32" && dtype != "float64")
    throw py::value_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
  if (kernel != "imq" && kernel != "rbf")
    throw py::value_error("kernel must be 'imq' or 'rbf', got '" + kernel + "'");
  if (n < 1 || m < 1 || d < 1)
    throw py::value_error("n, m and d must be positive, got n=" + std::to_string(n) +
                          " m=" + std::to_string(m) + " d=" + std::to_string(d));
  if (n > (int64_t(1) << 30) || m > (int64_t(1) << 30))
    throw py::value_error("n and m must be at most 2^30");
  if (unbiased && (n < 2 || m < 2))
    throw py::value_error("the unbiased estimator needs n >= 2 and m >= 2");
  if (bandwidths.empty() || static_cast<int>(bandwidths.size()) > kMaxBandwidths)
    throw py::value_error("between 1 and 64 bandwidths are supported, got " +
                          std::to_string(bandwidths.size()));
  for (double b : bandwidths)
    if (!(b > 0.0) || !std::isfinite(b))
      throw py::value_error("bandwidths must be positive and finite");
  if (x == 0 || y == 0) throw py::value_error("x and y must be non-null buffer addresses");
  if (threads < 1) throw py::value_error("threads must be >= 1");

  wae_fast::cpu::MmdProblem p;
  p.n = n;
  p.m = m;
  p.d = d;
  p.kernel = kernel == "imq" ? wae_fast::cpu::Kernel::kImq : wae_fast::cpu::Kernel::kRbf;
  p.bandwidths = bandwidths.data();
  p.num_bandwidths = static_cast<int>(bandwidths.size());
  p.unbiased = unbiased;
  p.threads = threads;

  py::gil_scoped_release release;
  if (dtype == "float32") {
    return wae_fast::cpu::mmd_fused_f32(p, reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(y),
                                        reinterpret_cast<float*>(grad_x), reinterpret_cast<float*>(grad_y));
  }
  return wae_fast::cpu::mmd_fused_f64(p, reinterpret_cast<const double*>(x), reinterpret_cast<const double*>(y),
                                      reinterpret_cast<double*>(grad_x), reinterpret_cast<double*>(grad_y));
}

}  // namespace

PYBIND11_MODULE(_C, mod) {
  mod.doc() = "wae_fast._C: fused CPU kernels for the kernel MMD² (raw buffers, no torch dependency).";
  mod.attr("__version__") = WAE_FAST_VERSION;
  mod.def("mmd_fused", &mmd_fused,
          R"doc(MMD² between x [n, d] and y [m, d] and, optionally, its gradients, in one sweep.

Args:
    dtype: "float32" or "float64": the element type of every buffer.
    x, y: addresses (int) of contiguous row-major [n, d] and [m, d] buffers.
    n, m, d: shapes.
    kernel: "imq" (k(r) = sum_b b / (b + r)) or "rbf" (k(r) = sum_b exp(-r / b)), r = ||a - b||^2.
    bandwidths: the effective bandwidths b (1 to 64 positive finite numbers).
    unbiased: U-statistic (diagonal excluded, needs n, m >= 2) or V-statistic.
    grad_x, grad_y: addresses of [n, d] / [m, d] output buffers for dMMD^2/dx and dMMD^2/dy, or 0
        to skip. Every element is written.
    threads: maximum number of threads (small problems use fewer).

Returns the statistic as a float (accumulated in double; NaN if any input is NaN or infinite).
The result does not depend on the thread count. The GIL is released while computing.)doc",
          py::arg("dtype"), py::arg("x"), py::arg("y"), py::arg("n"), py::arg("m"), py::arg("d"),
          py::arg("kernel"), py::arg("bandwidths"), py::arg("unbiased"), py::arg("grad_x"),
          py::arg("grad_y"), py::arg("threads"));
  mod.def(
      "build_info",
      []() {
        py::dict info;
        info["version"] = WAE_FAST_VERSION;
        info["simd"] = wae_fast::cpu::simd_description();
        info["simd_bytes"] = wae_fast::cpu::simd_bytes();
        info["flags"] = WAE_FAST_BUILD_FLAGS;
#if defined(__clang__)
        info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        info["compiler"] = std::string("gcc ") + __VERSION__;
#endif
        return info;
      },
      "How the extension was built: version, SIMD width and instruction set, compiler flags.");
}
