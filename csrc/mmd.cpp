// pybind11 bindings for wae_fast._C: argument checks, then the CPU kernels of the selected
// instruction-set path (cpu/dispatch.h).
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

#include "cpu/dispatch.h"
#include "cpu/mmd_cpu.h"

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

std::string type_name(py::handle obj) {
  py::handle type = reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr()));
  return py::str(type.attr("__module__")).cast<std::string>() + "." +
         py::str(type.attr("__qualname__")).cast<std::string>();
}

std::string shape_text(int64_t rows, int64_t cols) {
  return "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
}

// A checked 2-D float32/float64 buffer argument. Holds the buffer until destroyed.
struct Matrix {
  std::string name;
  py::buffer_info info;
  bool f64 = false;
  int64_t rows = 0, cols = 0;
  const char* begin() const { return static_cast<const char*>(info.ptr); }
  const char* end() const { return begin() + rows * cols * info.itemsize; }
  std::string shape() const { return shape_text(rows, cols); }
};

// 'f' or 'd' from a buffer format string ("f", "<f", "=d", ...), else 0.
char element_type(std::string format, py::ssize_t itemsize) {
  const uint16_t one = 1;
  const bool little = *reinterpret_cast<const unsigned char*>(&one) == 1;  // host byte order
  if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == (little ? '<' : '>')))
    format.erase(0, 1);
  if (format == "f" && itemsize == 4) return 'f';
  if (format == "d" && itemsize == 8) return 'd';
  return 0;
}

Matrix view_matrix(py::handle obj, const std::string& name, bool writable) {
  if (!PyObject_CheckBuffer(obj.ptr()))
    throw py::type_error(name + " must be a float32 or float64 array supporting the buffer protocol "
                         "(a numpy array, e.g. tensor.numpy()), got " + type_name(obj));
  Matrix mat;
  mat.name = name;
  try {
    mat.info = py::reinterpret_borrow<py::buffer>(obj).request(writable);
  } catch (py::error_already_set& exc) {
    throw py::value_error(name + (writable ? " must be a writable buffer: " : " is not a readable buffer: ") +
                          std::string(exc.what()));
  }
  const py::buffer_info& b = mat.info;
  if (b.ndim != 2) {
    std::string shape;
    for (py::ssize_t s : b.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(s);
    throw py::value_error(name + " must be 2-D [rows, features], got " + std::to_string(b.ndim) +
                          "-D shape (" + shape + ")");
  }
  const char type = element_type(b.format, b.itemsize);
  if (type == 0)
    throw py::type_error(name + " must hold float32 or float64, got buffer format '" + b.format + "' (" +
                         std::to_string(b.itemsize) + "-byte items)");
  mat.f64 = type == 'd';
  mat.rows = b.shape[0];
  mat.cols = b.shape[1];
  if (mat.rows < 1 || mat.cols < 1)
    throw py::value_error(name + " must have at least one row and one feature, got shape " + mat.shape());
  const bool row_major = (b.strides[1] == b.itemsize || mat.cols == 1) &&
                         (b.strides[0] == mat.cols * b.itemsize || mat.rows == 1);
  if (!row_major)
    throw py::value_error(name + " must be C-contiguous (row-major), got strides (" +
                          std::to_string(b.strides[0]) + ", " + std::to_string(b.strides[1]) +
                          ") bytes for shape " + mat.shape());
  if (reinterpret_cast<std::uintptr_t>(b.ptr) % static_cast<std::uintptr_t>(b.itemsize) != 0)
    throw py::value_error(name + " must be aligned to its " + std::to_string(b.itemsize) + "-byte elements");
  return mat;
}

void check_same_type(const Matrix& a, const Matrix& b) {
  if (a.f64 != b.f64)
    throw py::type_error(a.name + " and " + b.name + " must have the same dtype, got " +
                         (a.f64 ? "float64" : "float32") + " and " + (b.f64 ? "float64" : "float32"));
}

void check_no_overlap(const Matrix& out, const Matrix& other) {
  if (out.begin() < other.end() && other.begin() < out.end())
    throw py::value_error(out.name + " shares memory with " + other.name +
                          "; an output buffer must not overlap an input or the other output");
}

std::vector<double> three_finite(const std::vector<double>& values, const char* name, const char* names) {
  if (values.size() != 3)
    throw py::value_error(std::string(name) + " must be 3 numbers " + names + ", got " +
                          std::to_string(values.size()));
  for (double v : values)
    if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be finite numbers " + names);
  return values;
}

const IsaPath& path_for_call(const std::optional<std::string>& isa) {
  if (!isa) return *g_selected;
  try {
    return wae_fast::cpu::choose_path(*isa, "isa");
  } catch (const std::invalid_argument& exc) {
    throw py::value_error(exc.what());
  }
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

  if (kernel != static_cast<int>(Kernel::kImq) && kernel != static_cast<int>(Kernel::kRbf))
    throw py::value_error("kernel must be a kernel id (0: imq, 1: rbf; spec.KERNEL_IDS), got " +
                          std::to_string(kernel));
  if (n > (int64_t(1) << 30) || m > (int64_t(1) << 30))
    throw py::value_error("x and y may have at most 2^30 rows, got " + x.shape() + " and " + y.shape());
  if (unbiased && (n < 2 || m < 2))
    throw py::value_error("the unbiased estimator needs at least 2 rows in x and in y, got " + x.shape() +
                          " and " + y.shape());
  if (bandwidths.empty() || static_cast<int>(bandwidths.size()) > wae_fast::cpu::kMaxScales)
    throw py::value_error("bandwidths must hold 1 to " + std::to_string(wae_fast::cpu::kMaxScales) +
                          " numbers (spec.MAX_SCALES), got " + std::to_string(bandwidths.size()));
  for (double b : bandwidths)
    if (!(b > 0.0) || !std::isfinite(b))
      throw py::value_error("bandwidths must be positive and finite, got " + std::to_string(b));
  const std::vector<double> w = three_finite(weights_in, "weights", "(a_xx, a_yy, a_xy)");
  const std::vector<double> c = three_finite(coefficients_in, "coefficients", "(within_x, within_y, cross)");
  if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
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

// The permutation test's bindings (defined at the end of this file).
void register_permutation_test(py::module_& mod);
// The aggregated tests' bindings (csrc/mmd_agg.cpp, included at the end of this file).
void register_aggregated_tests(py::module_& mod);

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
  register_permutation_test(mod);
  register_aggregated_tests(mod);
}

// ---------------------------------------------------------------------------------------------
// The permutation test (csrc/cpu/mmd_perm_cpu.h): the sums of every labelling in one sweep.
#include "cpu/mmd_perm_cpu.h"

namespace {

// The permutation kernels of the compiled path called `name`.
const wae_fast::cpu::PermPath& perm_path_named(const std::string& name) {
  const wae_fast::cpu::PermPath* paths[] = {
#if defined(WAE_FAST_WITH_NATIVE)
      &wae_fast::cpu::native::kPermPath,
#endif
#if defined(WAE_FAST_WITH_AVX512)
      &wae_fast::cpu::avx512::kPermPath,
#endif
#if defined(WAE_FAST_WITH_AVX2)
      &wae_fast::cpu::avx2::kPermPath,
#endif
#if defined(WAE_FAST_WITH_BASELINE)
      &wae_fast::cpu::baseline::kPermPath,
#endif
  };
  for (const wae_fast::cpu::PermPath* path : paths)
    if (name == path->name) return *path;
  throw std::logic_error("wae_fast._C: no permutation kernels were compiled for the path '" + name + "'");
}

// A checked 2-D C-contiguous uint8 buffer: the labels.
struct LabelMatrix {
  py::buffer_info info;
  int64_t rows = 0, cols = 0;
  const uint8_t* data() const { return static_cast<const uint8_t*>(info.ptr); }
};

LabelMatrix view_labels(py::handle obj) {
  if (!PyObject_CheckBuffer(obj.ptr()))
    throw py::type_error("labels must be a uint8 array supporting the buffer protocol (a numpy array), got " +
                         type_name(obj));
  LabelMatrix mat;
  mat.info = py::reinterpret_borrow<py::buffer>(obj).request(false);
  const py::buffer_info& b = mat.info;
  std::string format = b.format;
  if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<' || format[0] == '>' ||
                          format[0] == '|'))
    format.erase(0, 1);
  if (b.ndim != 2 || b.itemsize != 1 || format != "B")
    throw py::type_error("labels must be a 2-D uint8 array [labellings, ceil(rows / 8)], got a " +
                         std::to_string(b.ndim) + "-D buffer of format '" + b.format + "'");
  mat.rows = b.shape[0];
  mat.cols = b.shape[1];
  if ((b.strides[1] != 1 && mat.cols > 1) || (b.strides[0] != mat.cols && mat.rows > 1))
    throw py::value_error("labels must be C-contiguous (row-major)");
  return mat;
}

double mmd_perm_sums(py::handle z_obj, py::handle labels_obj, int kernel, const std::vector<double>& bandwidths,
                     py::handle sums_obj, int threads, const std::optional<std::string>& isa) {
  Matrix z = view_matrix(z_obj, "z", false);
  LabelMatrix labels = view_labels(labels_obj);
  Matrix sums = view_matrix(sums_obj, "sums", true);
  const int64_t rows = z.rows, labellings = labels.rows;
  if (rows < 2) throw py::value_error("z must have at least 2 rows, got shape " + z.shape());
  if (rows > (int64_t(1) << 30)) throw py::value_error("z may have at most 2^30 rows, got shape " + z.shape());
  const int64_t label_bytes = (rows + 7) / 8;
  if (labellings < 1 || labels.cols != label_bytes)
    throw py::value_error("labels must be [labellings >= 1, ceil(rows / 8) = " + std::to_string(label_bytes) +
                          "] for z of shape " + z.shape() + ", got " + shape_text(labels.rows, labels.cols));
  if (!sums.f64 || sums.rows != 2 || sums.cols != labellings)
    throw py::value_error("sums must be a float64 array of shape " + shape_text(2, labellings) + ", got " +
                          std::string(sums.f64 ? "float64 " : "float32 ") + sums.shape());
  check_no_overlap(sums, z);
  const char* lb = reinterpret_cast<const char*>(labels.data());
  if (sums.begin() < lb + labellings * label_bytes && lb < sums.end())
    throw py::value_error("sums shares memory with labels; the output must not overlap an input");
  if (rows % 8 != 0) {
    const unsigned spare = 0xFFu << (rows % 8) & 0xFFu;  // the bits of the last byte past row N − 1
    for (int64_t p = 0; p < labellings; ++p)
      if (labels.data()[p * label_bytes + label_bytes - 1] & spare)
        throw py::value_error("labels: labelling " + std::to_string(p) + " sets a bit past row " +
                              std::to_string(rows - 1) + " (bits past the last row must be 0)");
  }
  if (kernel != static_cast<int>(Kernel::kImq) && kernel != static_cast<int>(Kernel::kRbf))
    throw py::value_error("kernel must be a kernel id (0: imq, 1: rbf; spec.KERNEL_IDS), got " +
                          std::to_string(kernel));
  if (bandwidths.empty() || static_cast<int>(bandwidths.size()) > wae_fast::cpu::kMaxScales)
    throw py::value_error("bandwidths must hold 1 to " + std::to_string(wae_fast::cpu::kMaxScales) +
                          " numbers (spec.MAX_SCALES), got " + std::to_string(bandwidths.size()));
  for (double b : bandwidths)
    if (!(b > 0.0) || !std::isfinite(b))
      throw py::value_error("bandwidths must be positive and finite, got " + std::to_string(b));
  if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
  const wae_fast::cpu::PermPath& path = perm_path_named(path_for_call(isa).name);

  wae_fast::cpu::PermProblem p;
  p.rows = rows;
  p.d = z.cols;
  p.kernel = static_cast<Kernel>(kernel);
  p.bandwidths = bandwidths.data();
  p.num_bandwidths = static_cast<int>(bandwidths.size());
  p.labels = labels.data();
  p.labellings = labellings;
  p.label_bytes = label_bytes;
  p.threads = threads;
  double* within = static_cast<double*>(sums.info.ptr);
  double* member_rows = within + labellings;
  py::gil_scoped_release release;
  if (!z.f64) return path.perm_sums_f32(p, static_cast<const float*>(z.info.ptr), within, member_rows);
  return path.perm_sums_f64(p, static_cast<const double*>(z.info.ptr), within, member_rows);
}

}  // namespace

void register_permutation_test(py::module_& mod) {
  mod.def("mmd_perm_sums", &mmd_perm_sums,
          R"doc(The sums of the MMD permutation test for every labelling of the pooled rows, in one sweep.

With K0 the kernel matrix of the pooled rows z (centred on their mean) with a zero diagonal and u_p the
0/1 labels of labelling p (u_pi = 1: row i is an "x" row), writes

    sums[0, p] = u_p^T K0 u_p   (the x-x pair sum, i != j)
    sums[1, p] = u_p^T K0 1     (the x rows' sums over every other row)

and returns 1^T K0 1. Every pair is evaluated once and applied to all labellings; nothing rows x rows
is allocated. Any NaN or infinity in z makes every output NaN. The result does not depend on the
thread count. The GIL is released while computing.

Args:
    z: C-contiguous float32 or float64 array [rows, d], rows >= 2 (not copied).
    labels: C-contiguous uint8 array [labellings, ceil(rows / 8)]: bit i % 8 (least significant
        first) of byte i / 8 is u_pi; bits past the last row must be 0.
    kernel: kernel id, spec.KERNEL_IDS (0 IMQ, 1 RBF); bandwidths: the effective bandwidths b_s.
    sums: writable C-contiguous float64 array [2, labellings], every element written.
    threads: maximum number of threads (small problems use fewer).
    isa: run this compiled instruction-set path instead of the selected one.)doc",
          py::arg("z"), py::arg("labels"), py::kw_only(), py::arg("kernel"), py::arg("bandwidths"),
          py::arg("sums"), py::arg("threads") = 1, py::arg("isa") = py::none());
}

#include "mmd_agg.cpp"
