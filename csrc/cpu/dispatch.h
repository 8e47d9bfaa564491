// Which compiled instruction-set path of the CPU kernels runs (compiled with the baseline flags).
#pragma once

#include <string>
#include <vector>

#include "cpu/mmd_cpu.h"

namespace wae_fast {
namespace cpu {

// The paths this build compiled, most capable first.
const std::vector<const IsaPath*>& compiled_paths();

// The path called `name` if it was compiled, else null.
const IsaPath* find_path(const std::string& name);

// Whether this CPU (and its operating system) supports every feature the path's code may use.
bool cpu_supports(const IsaPath& path);

// The features of the path this CPU lacks (empty when it can run).
std::vector<std::string> missing_features(const IsaPath& path);

// The path to use: the one named by `forced` ("" or "auto": the most capable one this CPU runs).
// Throws std::invalid_argument, naming `source` (where `forced` came from), when `forced` is not a
// compiled path or this CPU cannot run it.
const IsaPath& choose_path(const std::string& forced, const std::string& source);

}  // namespace cpu
}  // namespace wae_fast
