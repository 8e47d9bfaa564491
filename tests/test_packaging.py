"""Packaging, quickly: the source distribution holds every file the build reads, the one build resolver
(csrc/build_config.py) reads the version, spec.MAX_SCALES and the native switch, and the guard against
code shared between instruction-set paths can fail. The slow check (sdist and wheel installed into
fresh virtual environments and imported) is scripts/check_packaging.sh.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import wae_fast
from helpers import required_backends
from wae_fast import spec

REPO_ROOT = Path(__file__).resolve().parent.parent


def _resolver():
    module_spec = importlib.util.spec_from_file_location("wae_fast_build_config_under_test",
                                                         REPO_ROOT / "csrc/build_config.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


build_config = _resolver()


def _build_inputs() -> set[str]:
    """Every file setup.py reads, as paths relative to the repository root."""
    config = json.loads((REPO_ROOT / "csrc/build_config.json").read_text())
    files = {"setup.py", "pyproject.toml", "csrc/build_config.json", "csrc/build_config.py",
             "wae_fast/_version.py", "wae_fast/spec.py"}
    files |= set(config["sources"]) | set(config["depends"])
    files |= {p["source"] for p in config["isa_paths"]} | {config["native_path"]["source"]}
    # and every file those sources include with "..."
    pending = [f for f in files if f.startswith("csrc/")]
    while pending:
        text = (REPO_ROOT / pending.pop()).read_text()
        for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.MULTILINE):
            path = f"csrc/{name}"
            assert (REPO_ROOT / path).is_file(), f"#include \"{name}\" names no file under csrc/"
            if path not in files:
                files.add(path)
                pending.append(path)
    return files


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(out), "sdist",
                    "--dist-dir", str(out)], cwd=REPO_ROOT, check=True, capture_output=True, timeout=300)
    (archive,) = out.glob("wae_fast-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    prefix = f"wae_fast-{wae_fast.__version__}/"
    assert all(n.startswith(prefix) or n == prefix.rstrip("/") for n in names)
    return {n[len(prefix):] for n in names if n.startswith(prefix)}


def test_sdist_holds_every_build_input(sdist_names):
    missing = sorted(_build_inputs() - sdist_names)
    assert not missing, f"the source distribution lacks {missing} (MANIFEST.in)"
    on_disk = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "csrc").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk <= sdist_names


def test_sdist_holds_no_build_outputs(sdist_names):
    built = [n for n in sdist_names if n.endswith((".so", ".o", ".pyd", ".pyc")) or n.startswith("build/")]
    assert not built


def test_resolver_reads_version_scale_limit_and_paths():
    build = build_config.resolve(environ={}, machine="x86_64")
    assert build["version"] == wae_fast.__version__
    assert build["max_scales"] == spec.MAX_SCALES
    assert build["definitions"]["WAE_FAST_MAX_SCALES"] == str(spec.MAX_SCALES)
    assert build["string_definitions"]["WAE_FAST_VERSION"] == wae_fast.__version__
    assert [p["name"] for p in build["isa_paths"]] == ["baseline", "avx2", "avx512"]
    assert not any("-march=native" in p["flags_text"] for p in build["isa_paths"])
    for path in build["isa_paths"]:
        assert path["flags_text"] == " ".join(build["compile_flags"] + path["flags"])
        assert path["define"] == f"WAE_FAST_WITH_{path['name'].upper()}"
    assert [p["name"] for p in build_config.resolve(environ={}, machine="aarch64")["isa_paths"]] == ["baseline"]


@pytest.mark.parametrize("value, native", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_native_switch(value, native):
    build = build_config.resolve(environ={"WAE_FAST_NATIVE": value}, machine="x86_64")
    assert build["native"] is native
    names = [p["name"] for p in build["isa_paths"]]
    assert names == (["native"] if native else ["baseline", "avx2", "avx512"])
    if native:
        assert "-march=native" in build["isa_paths"][0]["flags"]


def test_resolver_prints_the_resolved_build():
    """`python csrc/build_config.py` prints the resolver's own answer, without torch or the package."""
    out = subprocess.run([sys.executable, "csrc/build_config.py"], cwd=REPO_ROOT, check=True, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert json.loads(out.stdout) == json.loads(json.dumps(build_config.resolve(environ={})))


_PATH_SOURCES = ["cpu/simd.h", "cpu/kernel_math.h", "cpu/isa_info.h", "cpu/perm_layout.h", "cpu/mmd_cpu.cpp",
                 "cpu/mmd_perm_cpu.cpp", "cpu/mmd_agg_cpu.cpp", "cpu/peak_fma.cpp", "cpu/isa_info.cpp"]


def test_every_path_source_is_listed():
    """The isa_<name>.cpp files compile exactly the path sources checked below, each listed as a dependency."""
    config = json.loads((REPO_ROOT / "csrc/build_config.json").read_text())
    for path in config["isa_paths"] + [config["native_path"]]:
        text = (REPO_ROOT / path["source"]).read_text()
        included = re.findall(r'^#include "([^"]+)"', text, re.MULTILINE)
        assert included == [s for s in _PATH_SOURCES if s.endswith(".cpp")], path["source"]
    assert {f"csrc/{s}" for s in _PATH_SOURCES} <= set(config["depends"])


@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler")
@pytest.mark.parametrize("flags", [[], ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"]],
                         ids=["baseline", "avx512"])
def test_each_path_source_includes_what_it_uses(tmp_path, flags):
    """Each source and header of an instruction-set path compiles on its own: none relies on another
    having been included before it in the path's translation unit."""
    if flags and platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 flags")
    for name in _PATH_SOURCES:
        unit = tmp_path / "unit.cpp"
        unit.write_text(f'#include "{name}"\n')
        subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "-Werror", f"-I{REPO_ROOT / 'csrc'}",
                        "-DWAE_FAST_ISA=probe", f"-DWAE_FAST_MAX_SCALES={spec.MAX_SCALES}", *flags, str(unit)],
                       check=True, timeout=120)


@pytest.mark.skipif(shutil.which("c++") is None or not sys.platform.startswith("linux") or shutil.which("nm") is None,
                    reason="needs a C++ compiler and nm on Linux")
def test_shared_code_guard_flags_an_out_of_line_inline_function(tmp_path):
    """An inline function of external linkage defined in a path's object could be the copy the linker
    keeps for every path: the guard must report it, and pass the namespaced table alone."""
    source = tmp_path / "isa_probe.cpp"
    source.write_text(
        "namespace wae_fast { namespace cpu { namespace avx2 { extern const int kPath = 1; } } }\n"
        "__attribute__((noinline)) inline int shared_helper(int v) { return v * 3; }\n"
        "namespace { int use(int v) { return shared_helper(v); } }\n"
        "namespace wae_fast { namespace cpu { namespace avx2 { int (*keep)(int) = &use; } } }\n")
    obj = tmp_path / "isa_probe.o"
    subprocess.run(["c++", "-O2", "-c", str(source), "-o", str(obj)], check=True, timeout=120)
    foreign = build_config.foreign_symbols(obj, "avx2")
    assert foreign == ["shared_helper(int)"]
    assert build_config.main(["--check-object", str(obj), "avx2"]) == 1
    clean = tmp_path / "clean.cpp"
    clean.write_text("namespace wae_fast { namespace cpu { namespace avx2 { extern const int kPath = 1; } } }\n")
    subprocess.run(["c++", "-O2", "-c", str(clean), "-o", str(tmp_path / "clean.o")], check=True, timeout=120)
    assert build_config.foreign_symbols(tmp_path / "clean.o", "avx2") == []


def _signature(function: ast.FunctionDef) -> list[tuple[str, str, object]]:
    """(name, kind, default) of each parameter; a default as its literal value, "-" when there is none."""
    args = function.args
    params = ([(a.arg, "positional") for a in args.posonlyargs + args.args]
              + [(a.arg, "keyword") for a in args.kwonlyargs])
    defaults = [None] * (len(args.posonlyargs + args.args) - len(args.defaults)) + args.defaults + args.kw_defaults
    return [(name, kind, "-" if d is None else ast.literal_eval(d)) for (name, kind), d in zip(params, defaults)]


def test_the_stub_of_the_compiled_module_matches_its_bindings():
    """wae_fast/_C.pyi declares every attribute and function of wae_fast._C, with the parameter names,
    kinds and defaults the bindings give (pybind11's signature line of each docstring)."""
    from wae_fast.backends import cpu

    ok, why = cpu.is_available()
    if not ok:
        if "cpu" in required_backends():
            pytest.fail(why)
        pytest.skip(why)
    from wae_fast import _C

    stub = ast.parse((REPO_ROOT / "wae_fast/_C.pyi").read_text())
    functions = {node.name: node for node in stub.body if isinstance(node, ast.FunctionDef)}
    attributes = {node.target.id for node in stub.body if isinstance(node, ast.AnnAssign)}
    public = {name for name in dir(_C) if not name.startswith("__")} | {"__version__"}
    assert set(functions) | attributes == public
    for name, node in functions.items():
        bound = getattr(_C, name)
        assert callable(bound), name
        line = bound.__doc__.splitlines()[0]
        (compiled,) = ast.parse(f"def {line}: ...").body
        assert _signature(node) == _signature(compiled), name
    for name in attributes:
        assert not callable(getattr(_C, name)), name
    assert (REPO_ROOT / "wae_fast/py.typed").is_file()


def test_the_version_has_one_source():
    """pyproject.toml's [project] takes the version from wae_fast/_version.py, as the build resolver does;
    setup.py passes no metadata of its own."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "wae_fast._version.__version__"}
    assert build_config.read_version() == wae_fast.__version__
    setup_call = (REPO_ROOT / "setup.py").read_text().split("\nsetup(", 1)[1]
    assert not re.search(r"\b(name|version|install_requires|extras_require)=", setup_call)
