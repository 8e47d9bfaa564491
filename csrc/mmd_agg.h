// The bindings of the aggregated tests (mmd_agg.cpp), added by the module definition in mmd.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace wae_fast {
namespace bindings {

// Defines mmd_agg_sums on the module.
void def_aggregated_tests(pybind11::module_& mod);

}  // namespace bindings
}  // namespace wae_fast
