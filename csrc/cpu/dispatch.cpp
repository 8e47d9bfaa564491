// Which compiled instruction-set path of the CPU kernels runs (see dispatch.h).
//
// The build defines WAE_FAST_WITH_<PATH> for every path it compiled (csrc/build_config.py). A path
// runs only where the CPU has every feature its compiler flags enabled (IsaPath::cpu_features),
// tested with __builtin_cpu_supports, which also checks that the operating system saves the
// vector registers.
#include "cpu/dispatch.h"

#include <cstring>
#include <stdexcept>

namespace wae_fast {
namespace cpu {
namespace {

bool has_feature(const char* name) {
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports needs literal names.
#define WAE_FAST_FEATURE(literal) \
  if (std::strcmp(name, literal) == 0) return __builtin_cpu_supports(literal);
  WAE_FAST_FEATURE("sse3")
  WAE_FAST_FEATURE("ssse3")
  WAE_FAST_FEATURE("sse4.1")
  WAE_FAST_FEATURE("sse4.2")
  WAE_FAST_FEATURE("popcnt")
  WAE_FAST_FEATURE("avx")
  WAE_FAST_FEATURE("avx2")
  WAE_FAST_FEATURE("fma")
  WAE_FAST_FEATURE("bmi")
  WAE_FAST_FEATURE("bmi2")
  WAE_FAST_FEATURE("avx512f")
  WAE_FAST_FEATURE("avx512vl")
  WAE_FAST_FEATURE("avx512bw")
  WAE_FAST_FEATURE("avx512dq")
  WAE_FAST_FEATURE("avx512cd")
#undef WAE_FAST_FEATURE
#endif
  return false;
}

std::vector<const IsaPath*> make_compiled_paths() {
  std::vector<const IsaPath*> paths;
#if defined(WAE_FAST_WITH_NATIVE)
  paths.push_back(&native::kPath);
#endif
#if defined(WAE_FAST_WITH_AVX512)
  paths.push_back(&avx512::kPath);
#endif
#if defined(WAE_FAST_WITH_AVX2)
  paths.push_back(&avx2::kPath);
#endif
#if defined(WAE_FAST_WITH_BASELINE)
  paths.push_back(&baseline::kPath);
#endif
  return paths;
}

}  // namespace

const std::vector<const IsaPath*>& compiled_paths() {
  static const std::vector<const IsaPath*> paths = make_compiled_paths();
  return paths;
}

const IsaPath* find_path(const std::string& name) {
  for (const IsaPath* path : compiled_paths())
    if (name == path->name) return path;
  return nullptr;
}

std::vector<std::string> missing_features(const IsaPath& path) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#endif
  std::vector<std::string> missing;
  for (const char* const* feature = path.cpu_features; *feature != nullptr; ++feature)
    if (!has_feature(*feature)) missing.emplace_back(*feature);
  return missing;
}

bool cpu_supports(const IsaPath& path) { return missing_features(path).empty(); }

const IsaPath& choose_path(const std::string& forced, const std::string& source) {
  std::string names;
  for (const IsaPath* path : compiled_paths()) names += (names.empty() ? "" : ", ") + std::string(path->name);
  if (forced.empty() || forced == "auto") {
    for (const IsaPath* path : compiled_paths())
      if (cpu_supports(*path)) return *path;
    throw std::invalid_argument("this CPU cannot run any compiled path of wae_fast._C (compiled: " +
                                names + ")");
  }
  const IsaPath* path = find_path(forced);
  if (path == nullptr)
    throw std::invalid_argument(source + " = '" + forced + "' is not a compiled path of wae_fast._C " +
                                "(compiled: " + names + "; or 'auto')");
  const std::vector<std::string> missing = missing_features(*path);
  if (!missing.empty()) {
    std::string list;
    for (const std::string& f : missing) list += (list.empty() ? "" : ", ") + f;
    throw std::invalid_argument(source + " = '" + forced + "', but this CPU lacks " + list);
  }
  return *path;
}

}  // namespace cpu
}  // namespace wae_fast
