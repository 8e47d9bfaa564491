// The bindings of the permutation test (mmd_perm.cpp), added by the module definition in mmd.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace wae_fast {
namespace bindings {

// Defines mmd_perm_sums on the module.
void def_permutation_test(pybind11::module_& mod);

}  // namespace bindings
}  // namespace wae_fast
