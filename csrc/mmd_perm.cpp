// pybind11 bindings of the permutation test (csrc/cpu/mmd_perm_cpu.h): the sums of every labelling in
// one sweep. Argument checks shared with the MMD bindings are in checks.h; the module is mmd.cpp's.
#include "mmd_perm.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.h"
#include "cpu/mmd_cpu.h"
#include "cpu/mmd_perm_cpu.h"

namespace py = pybind11;
using wae_fast::cpu::Kernel;

namespace {

using namespace wae_fast::bindings;

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

double mmd_perm_sums(py::handle z_obj, py::handle labels_obj, int kernel, const std::vector<double>& bandwidths,
                     py::handle sums_obj, const std::vector<int>& rescale, int threads,
                     const std::optional<std::string>& isa) {
  Matrix z = view_matrix(z_obj, "z", false);
  LabelMatrix labels = view_labels(labels_obj);
  Matrix sums = view_matrix(sums_obj, "sums", true);
  const int64_t rows = z.rows, labellings = labels.rows;
  const int64_t label_bytes = check_pooled_labels(z, labels);
  if (!sums.f64 || sums.rows != 2 || sums.cols != labellings)
    throw py::value_error("sums must be a float64 array of shape " + shape_text(2, labellings) + ", got " +
                          std::string(sums.f64 ? "float64 " : "float32 ") + sums.shape());
  check_no_overlap(sums, z);
  check_not_labels(sums, labels);
  check_kernel(kernel);
  check_bandwidths(bandwidths);
  check_threads(threads);
  if (rescale.size() != 3) throw py::value_error("rescale must be 3 integers (offset, lower, upper)");
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
  p.rescale_offset = rescale[0];
  p.rescale_lower = rescale[1];
  p.rescale_upper = rescale[2];
  p.threads = threads;
  double* within = static_cast<double*>(sums.info.ptr);
  double* member_rows = within + labellings;
  py::gil_scoped_release release;
  if (!z.f64) return path.perm_sums_f32(p, static_cast<const float*>(z.info.ptr), within, member_rows);
  return path.perm_sums_f64(p, static_cast<const double*>(z.info.ptr), within, member_rows);
}

}  // namespace

void wae_fast::bindings::def_permutation_test(py::module_& mod) {
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
    rescale: (offset, lower, upper), spec.rescale_bounds: z centred is multiplied by 2^-E and the
        bandwidths by 2^-2E, as in mmd_sums; no such E makes every output NaN.
    threads: maximum number of threads (small problems use fewer).
    isa: run this compiled instruction-set path instead of the selected one.)doc",
          py::arg("z"), py::arg("labels"), py::kw_only(), py::arg("kernel"), py::arg("bandwidths"),
          py::arg("sums"), py::arg("rescale"), py::arg("threads") = 1, py::arg("isa") = py::none());
}
