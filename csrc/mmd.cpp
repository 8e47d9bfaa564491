// pybind11 bindings for wae_fast._C: the module, the MMD bindings and the build information; argument
// checks (checks.h), then the CPU kernels of the selected instruction-set path (cpu/dispatch.h). The
// permutation test's bindings are in mmd_perm.cpp.
//
// The module does not include or link any torch header. It takes its arrays through the Python
// buffer protocol (numpy arrays; the launcher wae_fast/backends/cpu.py passes tensor.numpy() views)
// and checks here, in C++, that each is 2-D, float32 or float64, C-contiguous, aligned, of the
// expected shape, writable for the outputs, and that no output shares memory with another array.
// The buffers are held (and so kept alive) for the whole call; the GIL is released while computing.
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

// Rows [begin, end) of x and of y swept by a row-range call (mmd_block_sums).
struct RowRanges {
  int64_t begin[2] = {0, 0};
  int64_t end[2] = {0, 0};
};

// The checks and the call shared by mmd_fused (ranges null: every row) and mmd_block_sums (ranges given;
// the five block sums are written to block_sums).
double run_mmd(py::handle x_obj, py::handle y_obj, int kernel, const std::vector<double>& bandwidths,
               bool unbiased, const std::vector<double>& weights_in, const std::vector<double>& coefficients_in,
               py::handle grad_x_obj, py::handle grad_y_obj, int threads, const std::optional<std::string>& isa,
               const RowRanges* ranges, double* block_sums) {
  Matrix x = view_matrix(x_obj, "x", false);
  Matrix y = view_matrix(y_obj, "y", false);
  check_same_type(x, y);
  if (x.cols != y.cols)
    throw py::value_error("x and y must have the same number of features, got x " + x.shape() + " and y " +
                          y.shape());
  const int64_t n = x.rows, m = y.rows, d = x.cols;
  int64_t range_rows[2] = {n, m};  // rows each gradient buffer holds
  if (ranges != nullptr) {
    const char* range_names[2] = {"x_rows", "y_rows"};
    for (int s = 0; s < 2; ++s) {
      const int64_t rows = s == 0 ? n : m;
      if (!(0 <= ranges->begin[s] && ranges->begin[s] <= ranges->end[s] && ranges->end[s] <= rows))
        throw py::value_error(std::string(range_names[s]) + " must be (begin, end) with 0 <= begin <= end <= " +
                              std::to_string(rows) + ", got (" + std::to_string(ranges->begin[s]) + ", " +
                              std::to_string(ranges->end[s]) + ")");
      range_rows[s] = ranges->end[s] - ranges->begin[s];
    }
  }
  std::optional<Matrix> grad[2];
  const char* grad_names[2] = {"grad_x", "grad_y"};
  py::handle grad_objs[2] = {grad_x_obj, grad_y_obj};
  for (int s = 0; s < 2; ++s) {
    if (grad_objs[s].is_none()) continue;
    grad[s] = view_matrix(grad_objs[s], grad_names[s], true);
    const Matrix& input = s == 0 ? x : y;
    check_same_type(*grad[s], input);
    if (ranges == nullptr && (grad[s]->rows != input.rows || grad[s]->cols != d))
      throw py::value_error(std::string(grad_names[s]) + " must have the shape of " + input.name + " " +
                            input.shape() + ", got " + grad[s]->shape());
    if (ranges != nullptr && (grad[s]->rows != range_rows[s] || grad[s]->cols != d))
      throw py::value_error(std::string(grad_names[s]) + " must have the shape of the swept rows of " +
                            input.name + " " + shape_text(range_rows[s], d) + ", got " + grad[s]->shape());
    check_no_overlap(*grad[s], x);
    check_no_overlap(*grad[s], y);
  }
  if (grad[0] && grad[1]) check_no_overlap(*grad[0], *grad[1]);

  check_kernel(kernel);
  if (n > (int64_t(1) << 30) || m > (int64_t(1) << 30))
    throw py::value_error("x and y may have at most 2^30 rows, got " + x.shape() + " and " + y.shape());
  if (unbiased && (n < 2 || m < 2))
    throw py::value_error("the unbiased estimator needs at least 2 rows in x and in y, got " + x.shape() +
                          " and " + y.shape());
  check_bandwidths(bandwidths);
  const std::vector<double> w = three_finite(weights_in, "weights", "(a_xx, a_yy, a_xy)");
  const std::vector<double> c = three_finite(coefficients_in, "coefficients", "(within_x, within_y, cross)");
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
  p.threads = threads;
  if (ranges != nullptr) {
    p.x_begin = ranges->begin[0];
    p.x_end = ranges->end[0];
    p.y_begin = ranges->begin[1];
    p.y_end = ranges->end[1];
    p.block_sums = block_sums;
  }

  void* gx = grad[0] ? grad[0]->info.ptr : nullptr;
  void* gy = grad[1] ? grad[1]->info.ptr : nullptr;
  py::gil_scoped_release release;
  if (!x.f64) {
    return path.mmd_f32(p, static_cast<const float*>(x.info.ptr), static_cast<const float*>(y.info.ptr),
                        static_cast<float*>(gx), static_cast<float*>(gy));
  }
  return path.mmd_f64(p, static_cast<const double*>(x.info.ptr), static_cast<const double*>(y.info.ptr),
                      static_cast<double*>(gx), static_cast<double*>(gy));
}

double mmd_fused(py::handle x_obj, py::handle y_obj, int kernel, const std::vector<double>& bandwidths,
                 bool unbiased, const std::vector<double>& weights, const std::vector<double>& coefficients,
                 py::handle grad_x_obj, py::handle grad_y_obj, int threads, const std::optional<std::string>& isa) {
  return run_mmd(x_obj, y_obj, kernel, bandwidths, unbiased, weights, coefficients, grad_x_obj, grad_y_obj,
                 threads, isa, nullptr, nullptr);
}

py::tuple mmd_block_sums(py::handle x_obj, py::handle y_obj, int kernel, const std::vector<double>& bandwidths,
                         bool unbiased, const std::vector<double>& weights,
                         const std::vector<double>& coefficients, std::pair<int64_t, int64_t> x_rows,
                         std::pair<int64_t, int64_t> y_rows, py::handle grad_x_obj, py::handle grad_y_obj,
                         int threads, const std::optional<std::string>& isa) {
  RowRanges ranges;
  ranges.begin[0] = x_rows.first;
  ranges.end[0] = x_rows.second;
  ranges.begin[1] = y_rows.first;
  ranges.end[1] = y_rows.second;
  double sums[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
  run_mmd(x_obj, y_obj, kernel, bandwidths, unbiased, weights, coefficients, grad_x_obj, grad_y_obj, threads,
          isa, &ranges, sums);
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

  mod.def("mmd_fused", &mmd_fused,
          R"doc(MMD² between x [n, d] and y [m, d] and, optionally, its gradients, in one sweep.

Args:
    x, y: C-contiguous float32 or float64 arrays [n, d] and [m, d] of the same dtype (buffer protocol,
        e.g. numpy arrays; not copied).
    kernel: kernel id, spec.KERNEL_IDS: 0 IMQ (k(r) = sum_s b_s / (b_s + r)), 1 RBF (k(r) = sum_s
        exp(-r / b_s)), r = ||a - b||^2.
    bandwidths: the effective bandwidths b_s (1 to max_scales positive finite numbers).
    unbiased: leave the diagonal i = j out of the within blocks (needs n, m >= 2), or keep it.
    weights: (a_xx, a_yy, a_xy), spec.estimator_weights: MMD² = a_xx sum_xx k + a_yy sum_yy k + a_xy sum_xy k.
    coefficients: (within_x, within_y, cross), spec.gradient_coefficients: dMMD²/da_i =
        sum_blocks coef_block * sum_j wpos(r_ij) (a_i - b_j), wpos = -dk/dr.
    grad_x, grad_y: writable C-contiguous arrays of the shape and dtype of x / y for dMMD²/dx and
        dMMD²/dy, or None to skip. Every element is written. They must not overlap x, y or each other.
    threads: maximum number of threads (small problems use fewer).
    isa: run this compiled instruction-set path instead of the selected one (see isa_paths()).

Returns the statistic as a float (accumulated in double). Any NaN or infinity in x or y makes it and
every gradient entry NaN. The result does not depend on the thread count. The GIL is released while
computing.)doc",
          py::arg("x"), py::arg("y"), py::kw_only(), py::arg("kernel"), py::arg("bandwidths"),
          py::arg("unbiased"), py::arg("weights"), py::arg("coefficients"), py::arg("grad_x") = py::none(),
          py::arg("grad_y") = py::none(), py::arg("threads") = 1, py::arg("isa") = py::none());
  mod.def("mmd_block_sums", &mmd_block_sums,
          R"doc(The block sums of MMD² over a range of rows, and those rows' gradients: one process's share of
the distributed statistic (wae_fast.distributed), x and y being the rows of every process.

Rows [x_rows[0], x_rows[1]) of x sweep x (all j != i; the strict upper triangle doubled when grad_x is
None) and all of y; rows [y_rows[0], y_rows[1]) of y sweep y the same way and, only when grad_y is given,
all of x for dMMD²/dy. Arguments as in mmd_fused, except that grad_x / grad_y hold the swept rows only:
[x_rows[1] - x_rows[0], d] and [y_rows[1] - y_rows[0], d]. Weights and coefficients are those of all of x
and y (spec.estimator_weights(n, m, ...)), so the gradient rows are rows of the full gradient.

Returns five floats (accumulated in double; all NaN when x or y holds a NaN or an infinity):
(sum_xx, sum_yy, sum_xy, diag_x, diag_y): sum over the swept x rows i and all j != i of k(x_i, x_j) (with
grad_x; without, twice the sum over j > i); the same for y; sum over the swept x rows i and all j of
k(x_i, y_j); and, for the biased estimator, the
k(x_i, x_i) of the swept x rows and of the swept y rows (0 for the unbiased one). Summed over ranges
that cover every row once, MMD² = a_xx (sum_xx + diag_x) + a_yy (sum_yy + diag_y) + a_xy sum_xy.)doc",
          py::arg("x"), py::arg("y"), py::kw_only(), py::arg("kernel"), py::arg("bandwidths"),
          py::arg("unbiased"), py::arg("weights"), py::arg("coefficients"), py::arg("x_rows"), py::arg("y_rows"),
          py::arg("grad_x") = py::none(), py::arg("grad_y") = py::none(), py::arg("threads") = 1,
          py::arg("isa") = py::none());
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
