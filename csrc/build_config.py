"""The build of wae_fast._C, resolved in one place for setup.py.

It reads csrc/build_config.json (sources, instruction-set paths, flags), the version from
wae_fast/_version.py, MAX_SCALES from wae_fast/spec.py (by regular expression: the build does not import
torch) and the build switch from the environment, and returns everything a build needs. setup.py
imports it; ``python csrc/build_config.py`` prints the resolved build as JSON.

Switch (environment variable, or ``--native`` on the command line):
    WAE_FAST_NATIVE=1   build one path, "native", with -march=native: fastest on the building machine,
                        but the module may die with SIGILL on another CPU. By default the portable
                        paths of build_config.json are built (on x86-64: baseline, avx2, avx512) and
                        the module picks one at import from the CPU's features.

The kernels of each path are compiled into their own namespace, and ``foreign_symbols`` checks an
object file for external definitions outside it: an inline library function compiled with AVX-512
flags that the linker kept for every caller would make the baseline path die on an older CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no", "off")


def read_version(root: Path = ROOT) -> str:
    text = (root / "wae_fast/_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError("wae_fast/_version.py has no line __version__ = \"...\"")
    return match.group(1)


def read_max_scales(root: Path = ROOT) -> int:
    text = (root / "wae_fast/spec.py").read_text()
    match = re.search(r"^MAX_SCALES = (\d+)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError("wae_fast/spec.py has no line MAX_SCALES = <integer>")
    return int(match.group(1))


def _runs_on(path: dict, machine: str) -> bool:
    return "*" in path["machines"] or machine.lower() in path["machines"]


def resolve(root: Path = ROOT, environ=None, machine: str | None = None, native: bool | None = None) -> dict:
    """The build of wae_fast._C: module, version, max_scales, native, sources, depends, include_dirs,
    cxx_standard, compile_flags, link_flags, definitions (name → C token), string_definitions (name →
    text, to be quoted as a C string), isa_paths (each: name, source, flags, define, flags_text)."""
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    native = _truthy(environ.get("WAE_FAST_NATIVE")) if native is None else native
    config = json.loads((root / "csrc/build_config.json").read_text())
    chosen = [config["native_path"]] if native else config["isa_paths"]
    common = list(config["compile_flags"])
    paths = []
    for path in chosen:
        if not _runs_on(path, machine):
            continue
        flags = list(path["flags"])
        paths.append(dict(name=path["name"], source=path["source"], flags=flags,
                          define=f"WAE_FAST_WITH_{path['name'].upper()}",
                          flags_text=" ".join(common + flags)))
    return dict(
        module=config["module"],
        version=read_version(root),
        max_scales=read_max_scales(root),
        native=native,
        sources=list(config["sources"]),
        depends=list(config["depends"]),
        include_dirs=list(config["include_dirs"]),
        cxx_standard=config["cxx_standard"],
        compile_flags=common,
        link_flags=list(config["link_flags"]),
        definitions={"WAE_FAST_MAX_SCALES": str(read_max_scales(root))},
        string_definitions={"WAE_FAST_VERSION": read_version(root)},
        isa_paths=paths,
    )


def foreign_symbols(object_file: str | Path, path_name: str) -> list[str] | None:
    """External symbols that ``object_file`` (one path's compiled kernels) defines outside the
    namespace wae_fast::cpu::<path_name>; [] when there are none, None when ``nm`` cannot tell (not
    installed, not an ELF object)."""
    nm = shutil.which("nm")
    if nm is None or not sys.platform.startswith("linux"):
        return None
    try:
        out = subprocess.run([nm, "-C", "-g", "--defined-only", str(object_file)], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    prefix = f"wae_fast::cpu::{path_name}::"
    symbols = [line.split(maxsplit=2)[-1] for line in out.splitlines() if line.strip()]
    # DW.ref.*: a data word holding the address of the C++ exception personality routine; no code.
    return [s for s in symbols if not s.startswith(prefix) and not s.startswith("DW.ref.")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Print the resolved build of wae_fast._C as JSON.")
    parser.add_argument("--native", action="store_true", help="the WAE_FAST_NATIVE=1 build")
    parser.add_argument("--check-object", nargs=2, metavar=("OBJECT", "PATH_NAME"),
                        help="exit 1 if OBJECT defines external symbols outside wae_fast::cpu::PATH_NAME")
    args = parser.parse_args(argv)
    if args.check_object:
        foreign = foreign_symbols(*args.check_object)
        if foreign:
            print("\n".join(foreign), file=sys.stderr)
            return 1
        return 0
    print(json.dumps(resolve(native=True if args.native else None), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
