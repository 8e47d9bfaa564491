"""Builds the optional C++ extension wae_fast._C (the fused CPU backend); the package's metadata is
pyproject.toml's [project].

What to build comes from csrc/build_config.py: the sources, the instruction-set paths of the kernels
and their flags, the version and spec.MAX_SCALES. Each path (on
x86-64: baseline, avx2, avx512) is compiled from its own source with its own flags, and the module
picks one at import from the CPU's features, so a wheel runs on any CPU of its architecture.
WAE_FAST_NATIVE=1 builds a single -march=native path instead (this machine only).

A path the compiler cannot build is left out with a warning; if the extension cannot be built at
all, installation still succeeds with a warning and backend="cpu" then says what is missing.
"""
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _load_build_config():
    spec = importlib.util.spec_from_file_location("wae_fast_build_config", ROOT / "csrc/build_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_config = _load_build_config()
BUILD = build_config.resolve(ROOT)


def _extensions():
    try:
        import pybind11
    except ImportError:
        print("wae_fast: pybind11 is not installed; skipping the C++ extension wae_fast._C "
              "(pip install pybind11, then pip install -e . --no-build-isolation)", file=sys.stderr)
        return []
    return [Extension(
        BUILD["module"],
        sources=BUILD["sources"],
        depends=BUILD["depends"] + [p["source"] for p in BUILD["isa_paths"]],
        include_dirs=[str(ROOT / p) for p in BUILD["include_dirs"]] + [pybind11.get_include()],
        language="c++",
        extra_compile_args=[f"-std=c++{BUILD['cxx_standard']}"] + BUILD["compile_flags"],
        extra_link_args=list(BUILD["link_flags"]),
        define_macros=_macros(BUILD),
    )]


def _macros(build):
    return (list(build["definitions"].items())
            + [(name, '"' + text + '"') for name, text in build["string_definitions"].items()])


class OptionalBuildExt(build_ext):
    """build_ext that compiles each instruction-set path of the kernels with its own flags, links them
    into the one module, and warns instead of failing: wae_fast works without its C++ backend."""

    def build_extension(self, ext):
        try:
            self._build_with_paths(ext)
        except Exception as exc:  # noqa: BLE001 - any build failure must not break installation
            self._warn(exc)

    def _build_with_paths(self, ext):
        try:
            from setuptools.modified import newer_group
        except ImportError:  # setuptools < 69
            from setuptools.dep_util import newer_group

        ext_path = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(list(ext.sources) + list(ext.depends), ext_path, "newer")):
            print(f"wae_fast: skipping {ext.name} (up to date)", file=sys.stderr)
            return
        build = BUILD
        objects = self._compile_paths(ext, build)
        if objects is None and build["native"]:
            print("wae_fast: the -march=native path (WAE_FAST_NATIVE=1) failed to compile; building the "
                  "portable paths instead", file=sys.stderr)
            build = build_config.resolve(ROOT, native=False)
            objects = self._compile_paths(ext, build)
        if objects is None:
            raise RuntimeError("the baseline path of the kernels (csrc/cpu/isa_baseline.cpp) failed to compile")
        compiled, object_files = objects
        print(f"wae_fast: instruction-set paths compiled: {', '.join(compiled)}", file=sys.stderr)
        ext.extra_objects = list(ext.extra_objects or []) + object_files
        ext.define_macros = _macros(build) + [(p["define"], "1") for p in build["isa_paths"]
                                              if p["name"] in compiled]
        self.force = True  # the up-to-date check is done above
        super().build_extension(ext)

    def _compile_paths(self, ext, build):
        """([path names], [object files]) of the paths that compiled, or None if the first path (the
        baseline, or native) did not."""
        macros = _macros(build)

        def compile_one(path):
            try:
                return self.compiler.compile(
                    [path["source"]], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                    macros=macros + [("WAE_FAST_ISA_FLAGS", '"' + path["flags_text"] + '"')],
                    debug=self.debug, extra_postargs=list(ext.extra_compile_args) + path["flags"],
                    depends=ext.depends)
            except Exception as exc:  # noqa: BLE001 - a compiler without these flags
                return exc

        paths = build["isa_paths"]
        workers = max(1, min(len(paths), os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(compile_one, paths))
        compiled, object_files = [], []
        for index, (path, result) in enumerate(zip(paths, results)):
            if isinstance(result, Exception):
                if index == 0:
                    print(f"wae_fast: the {path['name']} path failed to compile: {result}", file=sys.stderr)
                    return None
                print(f"wae_fast: leaving out the {path['name']} path, the compiler rejected it "
                      f"({' '.join(path['flags'])}): {result}", file=sys.stderr)
                continue
            foreign = build_config.foreign_symbols(result[0], path["name"])
            if foreign and index > 0:
                print(f"wae_fast: leaving out the {path['name']} path: its object defines external symbols "
                      f"outside wae_fast::cpu::{path['name']} that another path could end up calling: "
                      f"{foreign[:5]}", file=sys.stderr)
                continue
            compiled.append(path["name"])
            object_files += result
        return compiled, object_files

    _warned = False

    def _warn(self, exc):
        if OptionalBuildExt._warned:
            return
        OptionalBuildExt._warned = True
        print("\n" + "=" * 78 + "\nWARNING: wae_fast: the C++ extension wae_fast._C could not be built:\n"
              f"  {type(exc).__name__}: {exc}\nwae_fast is installed without it; backend='cpu' will be "
              "unavailable and backend='auto' falls back to the dense reference on CPU.\nInstall a C++17 "
              "compiler and pybind11, then: pip install -e . --no-build-isolation\n" + "=" * 78 + "\n",
              file=sys.stderr)


# The metadata (name, version, dependencies, extras) is pyproject.toml's [project]; setup.py adds the
# extension and its build.
setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
