// pybind11 bindings for wae_fast._C: the module, the MMD bindings and the build information; argument
// checks (checks.h), then the CPU kernels of the selected instruction-set path (cpu/dispatch.h). The
// permutation test's bindings are in mmd_perm.cpp.
//
// The module does not include or link any torch header. The MMD entry takes the addresses of arrays the
// caller has checked (wae_fast/_problem.py, wae_fast/backends/cpu.py) and checks its scalars here; the
// permutation test's entry takes buffer-protocol arrays and checks them (checks.h). The GIL is released
// while computing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "cpu/dispatch.h"
#include "cpu/mmd_cpu.h"
#include "mmd_agg.h"
#include "mmd_perm.h"

#ifndef WAE_FAST_VERSION
#error "WAE_FAST_VERSION (wae_fast/_version.py) must be defined by the build"
#endif

namespace py = pybind11;
using wae_fast::cpu::IsaPath;
using wae_fast::cpu::Kernel;
using wae_fast::cpu::Mode;

namespace {

// The path chosen at import (WAE_FAST_ISA, or the most capable one this CPU runs).
const IsaPath* g_selected = nullptr;
// WAE_FAST_ISA as it was at import, or null.
std::optional<std::string> g_isa_env;

}  // namespace

const IsaPath& wae_fast::bindings::path_for_call(const std::optional<std::string>& isa) {
  if (!isa) return *g_selected;
  try {
    return wae_fast::cpu::choose_path(*isa, "isa");
  } catch (const std::invalid_argument& exc) {
    throw py::value_error(exc.what());
  }
}

namespace {

using namespace wae_fast::bindings;

std::vector<double> three_finite(const std::vector<double>& values, const char* name, const char* names) {
  if (values.size() != 3)
    throw py::value_error(std::string(name) + " must be 3 numbers " + names + ", got " +
                          std::to_string(values.size()));
  for (double v : values)
    if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be finite numbers " + names);
  return values;
}

void check_range(const char* name, int64_t begin, int64_t end, int64_t rows) {
  if (!(0 <= begin && begin <= end && end <= rows))
    throw py::value_error(std::string(name) + " must be (begin, end) with 0 <= begin <= end <= " +
                          std::to_string(rows) + ", got (" + std::to_string(begin) + ", " + std::to_string(end) + ")");
}

// The one MMD entry: rows [x_begin, x_end) of x and [y_begin, y_end) of y swept against every column
// (every row: the single-process call). The arrays come as addresses of C-contiguous row-major buffers,
// which the caller (wae_fast/backends/cpu.py, after wae_fast._problem's checks) guarantees: x [n, d] and
// y [m, d] of one dtype, the gradients (0: not wanted) [x_end − x_begin, d] and [y_end − y_begin, d] of the
// same dtype, not overlapping anything. The scalars are checked here. Returns the five block sums.
py::tuple mmd_sums(std::uintptr_t x, std::uintptr_t y, int64_t n, int64_t m, int64_t d, bool f64, int kernel,
                   const std::vector<double>& bandwidths, bool unbiased, const std::vector<double>& weights_in,
                   const std::vector<double>& coefficients_in, const std::vector<int>& rescale, int64_t x_begin,
                   int64_t x_end, int64_t y_begin, int64_t y_end, std::uintptr_t grad_x, std::uintptr_t grad_y,
                   int threads, const std::optional<std::string>& isa) {
  if (x == 0 || y == 0) throw py::value_error("x and y must be non-null addresses");
  if (n < 1 || m < 1 || d < 1)
    throw py::value_error("x and y must be non-empty, got " + shape_text(n, d) + " and " + shape_text(m, d));
  if (n > (int64_t(1) << 30) || m > (int64_t(1) << 30))
    throw py::value_error("x and y may have at most 2^30 rows, got " + shape_text(n, d) + " and " + shape_text(m, d));
  if (unbiased && (n < 2 || m < 2))
    throw py::value_error("the unbiased estimator needs at least 2 rows in x and in y, got " + shape_text(n, d) +
                          " and " + shape_text(m, d));
  check_kernel(kernel);
  check_bandwidths(bandwidths);
  const std::vector<double> w = three_finite(weights_in, "weights", "(a_xx, a_yy, a_xy)");
  const std::vector<double> c = three_finite(coefficients_in, "coefficients", "(within_x, within_y, cross)");
  if (rescale.size() != 3) throw py::value_error("rescale must be 3 integers (offset, lower, upper)");
  check_range("x_rows", x_begin, x_end, n);
  check_range("y_rows", y_begin, y_end, m);
  check_threads(threads);
  const IsaPath& path = path_for_call(isa);

  wae_fast::cpu::MmdProblem p;
  p.n = n;
  p.m = m;
  p.d = d;
  p.kernel = static_cast<Kernel>(kernel);
  p.bandwidths = bandwidths.data();
  p.num_bandwidths = static_cast<int>(bandwidths.size());
  p.unbiased = unbiased;
  p.a_xx = w[0];
  p.a_yy = w[1];
  p.a_xy = w[2];
  p.coef_within_x = c[0];
  p.coef_within_y = c[1];
  p.coef_cross = c[2];
  p.rescale_offset = rescale[0];
  p.rescale_lower = rescale[1];
  p.rescale_upper = rescale[2];
  p.threads = threads;
  p.x_begin = x_begin;
  p.x_end = x_end;
  p.y_begin = y_begin;
  p.y_end = y_end;
  double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  p.block_sums = sums;
  // An empty range has no gradient rows to write.
  void* gx = x_end > x_begin ? reinterpret_cast<void*>(grad_x) : nullptr;
  void* gy = y_end > y_begin ? reinterpret_cast<void*>(grad_y) : nullptr;
  {
    py::gil_scoped_release release;
    if (!f64) {
      path.mmd_f32(p, reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(y), static_cast<float*>(gx),
                   static_cast<float*>(gy));
    } else {
      path.mmd_f64(p, reinterpret_cast<const double*>(x), reinterpret_cast<const double*>(y),
                   static_cast<double*>(gx), static_cast<double*>(gy));
    }
  }
  return py::make_tuple(sums[0], sums[1], sums[2], sums[3], sums[4]);
}

double peak_fma_gflops(int threads, double seconds, const std::string& dtype, const std::optional<std::string>& isa) {
  if (threads < 1 || threads > 1024)
    throw py::value_error("threads must be between 1 and 1024, got " + std::to_string(threads));
  if (!(seconds > 0.0) || !(seconds <= 60.0))
    throw py::value_error("seconds must be in (0, 60], got " + std::to_string(seconds));
  if (dtype != "float32" && dtype != "float64")
    throw py::value_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
  const IsaPath& path = path_for_call(isa);
  py::gil_scoped_release release;
  return path.peak_fma_gflops(threads, seconds, dtype == "float64");
}

std::string compiler_text() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

py::list path_names(bool supported_only) {
  py::list names;
  for (const IsaPath* path : wae_fast::cpu::compiled_paths())
    if (!supported_only || wae_fast::cpu::cpu_supports(*path)) names.append(path->name);
  return names;
}

}  // namespace

PYBIND11_MODULE(_C, mod) {
  const char* env = std::getenv("WAE_FAST_ISA");
  if (env != nullptr) g_isa_env = std::string(env);
  try {
    g_selected = &wae_fast::cpu::choose_path(env != nullptr ? env : "", "the environment variable WAE_FAST_ISA");
  } catch (const std::invalid_argument& exc) {
    throw py::import_error(std::string("wae_fast._C: ") + exc.what());
  }

  mod.doc() = "wae_fast._C: fused CPU kernels for the kernel MMD² (buffer protocol arrays, no torch dependency).";
  mod.attr("__version__") = WAE_FAST_VERSION;
  mod.attr("max_scales") = wae_fast::cpu::kMaxScales;
  py::dict kernel_ids;
  kernel_ids["imq"] = static_cast<int>(Kernel::kImq);
  kernel_ids["rbf"] = static_cast<int>(Kernel::kRbf);
  mod.attr("kernel_ids") = kernel_ids;
  py::dict sweep_modes;
  sweep_modes["CROSS"] = static_cast<int>(Mode::kCross);
  sweep_modes["FULL"] = static_cast<int>(Mode::kFull);
  sweep_modes["TRIANGLE"] = static_cast<int>(Mode::kTriangle);
  mod.attr("sweep_modes") = sweep_modes;
  mod.attr("compiled_isas") = path_names(false);
  mod.attr("selected_isa") = g_selected->name;

  mod.def("mmd_sums", &mmd_sums,
          R"doc(The block sums of MMD² over a range of rows, and those rows' gradients, in one sweep.

Rows [x_begin, x_end) of x sweep x (all j != i when grad_x is given; else twice the sum over j > i) and all
of y; rows [y_begin, y_end) of y sweep y the same way and, only when grad_y is given, all of x for dMMD²/dy.
The single-process call is the full range.

Args (positional):
    x, y: addresses of C-contiguous [n, d] and [m, d] arrays of one dtype (float64 when f64, else float32),
        which the caller guarantees (wae_fast.backends.cpu); n, m, d their sizes.
    kernel: kernel id, spec.KERNEL_IDS: 0 IMQ (k(r) = sum_s b_s / (b_s + r)), 1 RBF (sum_s exp(-r / b_s)).
    bandwidths: the effective bandwidths b_s (1 to max_scales positive finite numbers).
    unbiased: leave the diagonal out of the within blocks (needs n, m >= 2), or keep it.
    weights: (a_xx, a_yy, a_xy), spec.estimator_weights of all n and m rows.
    coefficients: (within_x, within_y, cross), spec.gradient_coefficients: dMMD²/da_i =
        sum_blocks coef_block * sum_j wpos(r_ij) (a_i - b_j), wpos = -dk/dr.
    rescale: (offset, lower, upper), spec.rescale_bounds: the centred data are multiplied by 2^-E and the
        bandwidths by 2^-2E, E = clamp(e_spread, max(lower, e_spread - offset), upper); no such E: NaN.
    x_begin, x_end, y_begin, y_end: the swept rows.
    grad_x, grad_y: addresses of writable [x_end - x_begin, d] and [y_end - y_begin, d] arrays of x's
        dtype for the swept rows of dMMD²/dx and dMMD²/dy (every element written), or 0 to skip.
    threads: maximum number of threads (small problems use fewer).
    isa: run this compiled instruction-set path instead of the selected one (see isa_paths()).

Returns (sum_xx, sum_yy, sum_xy, diag_x, diag_y), accumulated in double, spec.BlockSums: the within sums
over the swept rows' pairs, the cross sum over the swept x rows, and the biased estimator's k(z_i, z_i)
of the swept rows (0 for the unbiased one). All NaN (and every gradient entry) when x or y holds a NaN or
an infinity. The result does not depend on the thread count. The GIL is released while computing.)doc",
          py::arg("x"), py::arg("y"), py::arg("n"), py::arg("m"), py::arg("d"), py::arg("f64"), py::arg("kernel"),
          py::arg("bandwidths"), py::arg("unbiased"), py::arg("weights"), py::arg("coefficients"), py::arg("rescale"),
          py::arg("x_begin"), py::arg("x_end"), py::arg("y_begin"), py::arg("y_end"), py::arg("grad_x"),
          py::arg("grad_y"), py::arg("threads"), py::arg("isa"));
  mod.def("peak_fma_gflops", &peak_fma_gflops,
          R"doc(The peak multiply-add rate of an instruction-set path, in GFLOP/s.

Each of `threads` threads runs independent chains of vector multiply-adds held in registers (enough
chains to cover the latency of two pipelined units; fused multiply-adds where the path has FMA) for
about `seconds`; 2 flops per lane per multiply-add. Compiled with the same flags as that path's MMD
kernels. Use one thread per physical core. The GIL is released while measuring.

Args:
    threads: 1 to 1024.
    seconds: measuring time, in (0, 60].
    dtype: "float32" or "float64" lanes.
    isa: a compiled path (default: the selected one).)doc",
          py::arg("threads"), py::arg("seconds"), py::kw_only(), py::arg("dtype") = "float32",
          py::arg("isa") = py::none());
  mod.def(
      "isa_paths",
      []() {
        py::list paths;
        for (const IsaPath* path : wae_fast::cpu::compiled_paths()) {
          py::dict info;
          info["name"] = path->name;
          info["flags"] = path->flags;
          info["simd"] = path->simd;
          info["simd_bytes"] = path->simd_bytes;
          py::list features;
          for (const char* const* f = path->cpu_features; *f != nullptr; ++f) features.append(*f);
          info["cpu_features"] = features;
          info["missing_cpu_features"] = wae_fast::cpu::missing_features(*path);
          info["supported"] = wae_fast::cpu::cpu_supports(*path);
          paths.append(info);
        }
        return paths;
      },
      "The compiled instruction-set paths, most capable first: name, flags, simd, simd_bytes, the CPU "
      "features each may use, which of them this CPU lacks, and whether it can run here.");
  mod.def(
      "build_info",
      []() {
        py::dict info;
        info["version"] = WAE_FAST_VERSION;
        info["compiled"] = path_names(false);
        info["supported"] = path_names(true);
        info["selected"] = g_selected->name;
        info["isa_env"] = g_isa_env ? py::object(py::str(*g_isa_env)) : py::object(py::none());
        info["compiler"] = compiler_text();
        info["flags"] = g_selected->flags;
        py::dict isa_flags;
        for (const IsaPath* path : wae_fast::cpu::compiled_paths()) isa_flags[path->name] = path->flags;
        info["isa_flags"] = isa_flags;
        info["simd"] = g_selected->simd;
        info["simd_bytes"] = g_selected->simd_bytes;
        info["max_scales"] = wae_fast::cpu::kMaxScales;
        return info;
      },
      "How the extension was built and which path runs: version, compiled (the instruction-set paths "
      "built), supported (those this CPU runs), selected (the one in use), isa_env (WAE_FAST_ISA at "
      "import), compiler, flags (the selected path's compile flags added by wae_fast's build), isa_flags "
      "(per path), simd, simd_bytes, max_scales.");
  def_permutation_test(mod);
  def_aggregated_tests(mod);
}
