// pybind11 bindings of the aggregated tests (csrc/cpu/mmd_agg_cpu.h): every kernel's sums of every
// labelling in one sweep. Argument checks shared with the other bindings are in checks.h; the module is
// mmd.cpp's.
#include "mmd_agg.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.h"
#include "cpu/mmd_agg_cpu.h"
#include "cpu/mmd_cpu.h"

namespace py = pybind11;

namespace {

using namespace wae_fast::bindings;

// The aggregated tests' kernels of the compiled path called `name`.
const wae_fast::cpu::AggPath& agg_path_named(const std::string& name) {
  const wae_fast::cpu::AggPath* paths[] = {
#if defined(WAE_FAST_WITH_NATIVE)
      &wae_fast::cpu::native::kAggPath,
#endif
#if defined(WAE_FAST_WITH_AVX512)
      &wae_fast::cpu::avx512::kAggPath,
#endif
#if defined(WAE_FAST_WITH_AVX2)
      &wae_fast::cpu::avx2::kAggPath,
#endif
#if defined(WAE_FAST_WITH_BASELINE)
      &wae_fast::cpu::baseline::kAggPath,
#endif
  };
  for (const wae_fast::cpu::AggPath* path : paths)
    if (name == path->name) return *path;
  throw std::logic_error("wae_fast._C: no aggregated-test kernels were compiled for the path '" + name + "'");
}

void mmd_agg_sums(py::handle z_obj, py::handle labels_obj, const std::vector<int>& kernels,
                  const std::vector<double>& bandwidths, py::handle sums_obj, py::handle totals_obj,
                  const std::vector<int>& rescale, int threads, const std::optional<std::string>& isa) {
  Matrix z = view_matrix(z_obj, "z", false);
  LabelMatrix labels = view_labels(labels_obj);
  Matrix sums = view_matrix(sums_obj, "sums", true);
  Matrix totals = view_matrix(totals_obj, "totals", true);
  const int64_t rows = z.rows, labellings = labels.rows;
  const int64_t count = static_cast<int64_t>(bandwidths.size());
  const int64_t label_bytes = check_pooled_labels(z, labels);
  if (kernels.size() != bandwidths.size())
    throw py::value_error("kernels and bandwidths must hold as many entries as one another, got " +
                          std::to_string(kernels.size()) + " and " + std::to_string(bandwidths.size()));
  for (int k : kernels) check_kernel(k);
  check_bandwidths(bandwidths);
  if (!sums.f64 || sums.rows != 2 * count || sums.cols != labellings)
    throw py::value_error("sums must be a float64 array of shape " + shape_text(2 * count, labellings) + ", got " +
                          std::string(sums.f64 ? "float64 " : "float32 ") + sums.shape());
  if (!totals.f64 || totals.rows != 2 || totals.cols != count)
    throw py::value_error("totals must be a float64 array of shape " + shape_text(2, count) + ", got " +
                          std::string(totals.f64 ? "float64 " : "float32 ") + totals.shape());
  check_no_overlap(sums, z);
  check_no_overlap(totals, z);
  check_no_overlap(totals, sums);
  check_not_labels(sums, labels);
  check_not_labels(totals, labels);
  if (rescale.size() != 3) throw py::value_error("rescale must be 3 integers (offset, lower, upper)");
  check_threads(threads);
  const wae_fast::cpu::AggPath& path = agg_path_named(path_for_call(isa).name);

  wae_fast::cpu::AggProblem p;
  p.rows = rows;
  p.d = z.cols;
  p.kernels = kernels.data();
  p.bandwidths = bandwidths.data();
  p.num_kernels = static_cast<int>(count);
  p.rescale_offset = rescale[0];
  p.rescale_lower = rescale[1];
  p.rescale_upper = rescale[2];
  p.labels = labels.data();
  p.labellings = labellings;
  p.label_bytes = label_bytes;
  p.threads = threads;
  double* within = static_cast<double*>(sums.info.ptr);
  double* member_rows = within + count * labellings;
  double* total = static_cast<double*>(totals.info.ptr);
  double* squares = total + count;
  py::gil_scoped_release release;
  if (!z.f64)
    path.agg_sums_f32(p, static_cast<const float*>(z.info.ptr), within, member_rows, total, squares);
  else
    path.agg_sums_f64(p, static_cast<const double*>(z.info.ptr), within, member_rows, total, squares);
}

}  // namespace

void wae_fast::bindings::def_aggregated_tests(py::module_& mod) {
  mod.def("mmd_agg_sums", &mmd_agg_sums,
          R"doc(The sums of the aggregated MMD tests for every kernel and every labelling, in one sweep.

With K0_s the kernel matrix of the pooled rows z (centred on their mean) under kernel s (one kernel id,
one bandwidth), zero diagonal, and u_p the 0/1 labels of labelling p, writes

    sums[s, p]          = u_p^T K0_s u_p     sums[S + s, p] = u_p^T K0_s 1
    totals[0, s]        = 1^T K0_s 1         totals[1, s]   = sum_{i != j} K0_s[i, j]^2

Every pair is evaluated once (one squared distance for all S kernels) and applied to all labellings;
nothing rows x rows is allocated. Any NaN or infinity in z, or no rescaling that fits, makes every
output NaN. The result does not
depend on the thread count. The GIL is released while computing.

Args:
    z: C-contiguous float32 or float64 array [rows, d], rows >= 2 (not copied).
    labels: C-contiguous uint8 array [labellings, ceil(rows / 8)], as mmd_perm_sums'.
    kernels: kernel ids, spec.KERNEL_IDS (0 IMQ, 1 RBF), one per kernel; bandwidths: one per kernel.
    sums: writable C-contiguous float64 array [2 S, labellings]; totals: [2, S]; every element written.
    rescale: (offset, lower, upper), spec.rescale_bounds of all the bandwidths: z centred is multiplied
        by 2^-E and the bandwidths by 2^-2E (NaN everywhere when no E fits).
    threads: maximum number of threads (small problems use fewer).
    isa: run this compiled instruction-set path instead of the selected one.)doc",
          py::arg("z"), py::arg("labels"), py::kw_only(), py::arg("kernels"), py::arg("bandwidths"),
          py::arg("sums"), py::arg("totals"), py::arg("rescale"), py::arg("threads") = 1,
          py::arg("isa") = py::none());
}
