// Argument checks shared by the bindings of wae_fast._C (mmd.cpp, mmd_perm.cpp, mmd_agg.cpp):
// buffer-protocol views of 2-D float32/float64 arrays (dimensions, dtype, C-contiguity, alignment,
// writability) and of the uint8 labels, overlap of an output with another array, the kernel id, the
// bandwidths, the thread count and the `isa` argument.
// Each raises the Python exception (TypeError or ValueError) that names the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu/mmd_cpu.h"

namespace wae_fast {
namespace bindings {

namespace py = pybind11;

inline std::string type_name(py::handle obj) {
  py::handle type = reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr()));
  return py::str(type.attr("__module__")).cast<std::string>() + "." +
         py::str(type.attr("__qualname__")).cast<std::string>();
}

inline std::string shape_text(int64_t rows, int64_t cols) {
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
inline char element_type(std::string format, py::ssize_t itemsize) {
  const uint16_t one = 1;
  const bool little = *reinterpret_cast<const unsigned char*>(&one) == 1;  // host byte order
  if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == (little ? '<' : '>')))
    format.erase(0, 1);
  if (format == "f" && itemsize == 4) return 'f';
  if (format == "d" && itemsize == 8) return 'd';
  return 0;
}

inline Matrix view_matrix(py::handle obj, const std::string& name, bool writable) {
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

inline void check_same_type(const Matrix& a, const Matrix& b) {
  if (a.f64 != b.f64)
    throw py::type_error(a.name + " and " + b.name + " must have the same dtype, got " +
                         (a.f64 ? "float64" : "float32") + " and " + (b.f64 ? "float64" : "float32"));
}

inline void check_no_overlap(const Matrix& out, const Matrix& other) {
  if (out.begin() < other.end() && other.begin() < out.end())
    throw py::value_error(out.name + " shares memory with " + other.name +
                          "; an output buffer must not overlap an input or the other output");
}

inline void check_kernel(int kernel) {
  if (kernel != static_cast<int>(cpu::Kernel::kImq) && kernel != static_cast<int>(cpu::Kernel::kRbf))
    throw py::value_error("kernel must be a kernel id (0: imq, 1: rbf; spec.KERNEL_IDS), got " +
                          std::to_string(kernel));
}

inline void check_bandwidths(const std::vector<double>& bandwidths) {
  if (bandwidths.empty() || static_cast<int>(bandwidths.size()) > cpu::kMaxScales)
    throw py::value_error("bandwidths must hold 1 to " + std::to_string(cpu::kMaxScales) +
                          " numbers (spec.MAX_SCALES), got " + std::to_string(bandwidths.size()));
  for (double b : bandwidths)
    if (!(b > 0.0) || !std::isfinite(b))
      throw py::value_error("bandwidths must be positive and finite, got " + std::to_string(b));
}

inline void check_threads(int threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
}

// A checked 2-D C-contiguous uint8 buffer: the labels of the permutation and aggregated tests.
struct LabelMatrix {
  py::buffer_info info;
  int64_t rows = 0, cols = 0;
  const uint8_t* data() const { return static_cast<const uint8_t*>(info.ptr); }
};

inline LabelMatrix view_labels(py::handle obj) {
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

// The pooled rows z (2 … 2^30 of them) and their labels: [labellings >= 1, ceil(rows / 8)] bytes, no bit
// set past the last row. Returns ceil(rows / 8).
inline int64_t check_pooled_labels(const Matrix& z, const LabelMatrix& labels) {
  const int64_t rows = z.rows, labellings = labels.rows;
  if (rows < 2) throw py::value_error("z must have at least 2 rows, got shape " + z.shape());
  if (rows > (int64_t(1) << 30)) throw py::value_error("z may have at most 2^30 rows, got shape " + z.shape());
  const int64_t label_bytes = (rows + 7) / 8;
  if (labellings < 1 || labels.cols != label_bytes)
    throw py::value_error("labels must be [labellings >= 1, ceil(rows / 8) = " + std::to_string(label_bytes) +
                          "] for z of shape " + z.shape() + ", got " + shape_text(labels.rows, labels.cols));
  if (rows % 8 != 0) {
    const unsigned spare = 0xFFu << (rows % 8) & 0xFFu;  // the bits of the last byte past row N − 1
    for (int64_t p = 0; p < labellings; ++p)
      if (labels.data()[p * label_bytes + label_bytes - 1] & spare)
        throw py::value_error("labels: labelling " + std::to_string(p) + " sets a bit past row " +
                              std::to_string(rows - 1) + " (bits past the last row must be 0)");
  }
  return label_bytes;
}

// An output must not overlap the labels.
inline void check_not_labels(const Matrix& out, const LabelMatrix& labels) {
  const char* lb = reinterpret_cast<const char*>(labels.data());
  if (out.begin() < lb + labels.rows * labels.cols && lb < out.end())
    throw py::value_error(out.name + " shares memory with labels; the output must not overlap an input");
}

// The instruction-set path a call runs: the one named by `isa` (ValueError if it is not a compiled
// path this CPU runs), else the one chosen at import. Defined in mmd.cpp, which makes that choice.
const cpu::IsaPath& path_for_call(const std::optional<std::string>& isa);

}  // namespace bindings
}  // namespace wae_fast
