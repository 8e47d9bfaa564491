"""Can pykeops run here? Try, in order, what is known to make pykeops 2.3 work on torch's CUDA 13 wheels,
and record what happened (pykeops finds libcuda/libnvrtc/libcudart with ctypes.util.find_library, which
does not look in torch's site-packages/nvidia/cu13/lib, and the CUDA headers through CUDA_PATH/CUDA_HOME,
then /usr/local/cuda; a mismatch of nvrtc, runtime and headers crashes it at the first formula):

    1. as it is: pykeops.check_health(), then a small Gaussian kernel sum on the GPU checked against torch
    2. CUDA_HOME and CUDA_PATH set to the toolkit whose version matches torch.version.cuda
    3. and torch's nvidia/cu*/lib on LD_LIBRARY_PATH and LIBRARY_PATH, with unversioned libnvrtc.so and
       libcudart.so links to its versioned libraries (in a folder of links, --links)
    4. and KeOps' cache cleared (pykeops.clean_pykeops())

Each attempt runs in a process of its own (a segmentation fault is a result, not the end of the check),
with a time limit. The first that works stops the list; its environment is written as a shell file that
scripts/gpu_check.sh sources before timing KeOps.

    python scripts/keops_check.py --out DIR      # DIR/keops_check.json, DIR/keops_env.sh when one worked

It always exits 0: a KeOps that cannot run is a finding.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

#: What each attempt runs: the health check, then a formula compiled and checked against torch.
PROBE = r"""
import json, sys
import torch
import pykeops
out = {"pykeops": pykeops.__version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda}
try:
    out["check_health"] = bool(pykeops.check_health()) if hasattr(pykeops, "check_health") else None
except Exception as exc:
    out["check_health"] = f"raised {type(exc).__name__}: {exc}"
if sys.argv[1] == "clean" and hasattr(pykeops, "clean_pykeops"):
    pykeops.clean_pykeops()
    out["cleaned"] = True
from pykeops.torch import LazyTensor
device = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator().manual_seed(0)
x = torch.randn(500, 3, generator=g).to(device)
y = torch.randn(400, 3, generator=g).to(device)
k = (-((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)).exp().sum(dim=1)
want = torch.exp(-torch.cdist(x.double(), y.double()) ** 2).sum(1)
out["device"] = device
out["max_rel_err"] = float(((k.double().flatten() - want).abs() / want.abs()).max())
out["ok"] = out["max_rel_err"] < 1e-4
print("@@keops@@" + json.dumps(out))
"""


def torch_cuda_version() -> str | None:
    try:
        import torch

        return torch.version.cuda
    except Exception:  # noqa: BLE001  (no torch: nothing to match)
        return None


def matching_toolkit(version: str | None) -> str | None:
    """The CUDA toolkit folder whose version is torch's (major.minor), else the newest of that major."""
    if not version:
        return None
    major, minor = version.split(".")[:2]
    exact = [p for p in (f"/usr/local/cuda-{major}.{minor}",) if Path(p, "bin", "nvcc").exists()]
    if exact:
        return exact[0]
    same_major = sorted(p for p in glob.glob(f"/usr/local/cuda-{major}.*") if Path(p, "bin", "nvcc").exists())
    return same_major[-1] if same_major else None


def torch_nvidia_libs() -> list[str]:
    """torch's bundled CUDA libraries' folders (site-packages/nvidia/cu*/lib and nvidia/*/lib)."""
    found = []
    for entry in sys.path:
        for pattern in ("nvidia/cu*/lib", "nvidia/*/lib"):
            found += [p for p in glob.glob(os.path.join(entry, pattern)) if os.path.isdir(p)]
    return sorted(set(found))


def unversioned_links(lib_dirs: list[str], where: Path) -> list[str]:
    """Links libnvrtc.so and libcudart.so (what find_library looks for) to the newest versioned ones."""
    where.mkdir(parents=True, exist_ok=True)
    made = []
    for name in ("libnvrtc.so", "libcudart.so"):
        candidates = sorted(p for d in lib_dirs for p in glob.glob(os.path.join(d, name + ".*"))
                            if "alt" not in os.path.basename(p))
        if candidates:
            link = where / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(candidates[-1])
            made.append(f"{link} -> {candidates[-1]}")
    return made


def attempt(name: str, env: dict, mode: str, timeout: float) -> dict:
    """Run the probe in a fresh process under env; its result, or how it died."""
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or "")[-800:] if isinstance(exc.stdout, str) else ""
        return {"attempt": name, "status": "TIMEOUT", "seconds": round(time.time() - start, 1), "tail": tail}
    result = {"attempt": name, "returncode": proc.returncode, "seconds": round(time.time() - start, 1)}
    if proc.returncode < 0:
        result["signal"] = signal.Signals(-proc.returncode).name
    for line in proc.stdout.splitlines():
        if line.startswith("@@keops@@"):
            result.update(json.loads(line[len("@@keops@@"):]))
    result["status"] = "ok" if result.get("ok") else ("crashed" if proc.returncode < 0 else "failed")
    result["tail"] = (proc.stdout + proc.stderr)[-1500:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=".", help="folder for keops_check.json and keops_env.sh")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt")
    parser.add_argument("--links", default="/tmp/wae_fast_keops_libs", help="folder for the unversioned links")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"python": sys.executable, "torch_cuda": torch_cuda_version(), "attempts": []}
    import importlib.util

    if importlib.util.find_spec("pykeops") is None:  # found, not imported: importing it may crash too
        report["result"] = "pykeops is not installed"
        (out / "keops_check.json").write_text(json.dumps(report, indent=1))
        print(f"keops_check: {report['result']}")
        return 0

    env = dict(os.environ)
    toolkit = matching_toolkit(report["torch_cuda"])
    libs = torch_nvidia_libs()
    steps = [("as is", {}, "plain")]
    if toolkit:
        steps.append(("CUDA_HOME/CUDA_PATH=" + toolkit, {"CUDA_HOME": toolkit, "CUDA_PATH": toolkit}, "plain"))
    links = unversioned_links(libs, Path(args.links))
    report["toolkit"], report["torch_libs"], report["links"] = toolkit, libs, links
    lib_path = os.pathsep.join([args.links, *libs])
    lib_env = {"LD_LIBRARY_PATH": lib_path + os.pathsep + env.get("LD_LIBRARY_PATH", ""),
               "LIBRARY_PATH": lib_path + os.pathsep + env.get("LIBRARY_PATH", "")}
    toolkit_env = {"CUDA_HOME": toolkit, "CUDA_PATH": toolkit} if toolkit else {}
    steps.append(("and torch's CUDA libraries on the library paths", {**toolkit_env, **lib_env}, "plain"))
    steps.append(("and KeOps' cache cleared", {**toolkit_env, **lib_env}, "clean"))
    for name, extra, mode in steps:
        result = attempt(name, {**env, **extra}, mode, args.timeout)
        result["env"] = extra
        report["attempts"].append(result)
        print(f"keops_check: {name}: {result['status']}"
              + (f" ({result.get('signal')})" if result.get("signal") else "")
              + (f", max rel err {result['max_rel_err']:.1e}" if "max_rel_err" in result else ""), flush=True)
        if result["status"] == "ok":
            report["result"] = f"works: {name}"
            lines = [f"export {k}={shlex.quote(v)}" for k, v in extra.items()]
            (out / "keops_env.sh").write_text("\n".join(lines) + "\n")
            break
    else:
        report["result"] = "no attempt worked"
    (out / "keops_check.json").write_text(json.dumps(report, indent=1))
    print(f"keops_check: {report['result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
