#!/usr/bin/env bash
# Packaging check (CI): `python -m build` makes the source distribution and, from it, the wheel; each is
# installed (not editable) into its own fresh virtual environment and imported from outside the checkout,
# and the fused CPU backend must be there and agree with the reference. A few minutes on 2 cores: the
# extension is compiled twice (the wheel, and the install from the sdist).
#
#   bash scripts/check_packaging.sh          # PYTHON (default: python3) must already have torch and numpy
#
# torch is not downloaded again: each fresh environment sees the calling environment's packages through
# a .pth file (without its own copy of wae_fast). The build tools come from the package index (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wae_fast_packaging.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH WAE_FAST_ISA WAE_FAST_NATIVE

"$PYTHON" -c "import torch, numpy" || { echo "check_packaging: $PYTHON needs torch and numpy" >&2; exit 1; }

# The calling environment's packages, minus any wae_fast (an editable install's finder included).
HOST_PACKAGES="$WORK/host-packages"
mkdir -p "$HOST_PACKAGES"
"$PYTHON" - "$HOST_PACKAGES" <<'EOF'
import os, site, sys, sysconfig
dest = sys.argv[1]
dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
for d in dirs:
    for name in sorted(os.listdir(d)):
        if "wae_fast" in name.lower() or name.endswith(".pth") or name == "__pycache__":
            continue
        link = os.path.join(dest, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(d, name), link)
EOF

fresh_venv() {  # fresh_venv DIR: a new environment that also sees HOST_PACKAGES
  "$PYTHON" -m venv "$1"
  local site
  site=$("$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$HOST_PACKAGES" > "$site/_host_packages.pth"
}

SMOKE=$(cat <<'EOF'
import os, platform, sys
import torch
import wae_fast
from wae_fast.backends import cpu

where = os.path.realpath(wae_fast.__file__)
expected = os.path.realpath(sys.argv[1])
assert where.startswith(expected + os.sep), f"wae_fast imported from {where}, not from {expected}"
ok, why = cpu.is_available()
assert ok, why
info = wae_fast.build_info()
paths = ["avx512", "avx2", "baseline"] if platform.machine().lower() in ("x86_64", "amd64") else ["baseline"]
assert info["compiled"] == paths, info
assert info["selected"] in info["supported"] and "-march=native" not in info["flags"], info
torch.manual_seed(0)
x, y = torch.randn(300, 6, dtype=torch.float64, requires_grad=True), torch.randn(200, 6, dtype=torch.float64)
value = wae_fast.imq_mmd(x, y, scales=wae_fast.OFFICIAL_SCALES, backend="cpu")
(grad,) = torch.autograd.grad(value, x)
x_ref = x.detach().requires_grad_(True)
ref = wae_fast.imq_mmd(x_ref, y, scales=wae_fast.OFFICIAL_SCALES, backend="reference")
(grad_ref,) = torch.autograd.grad(ref, x_ref)
assert abs(value.item() - ref.item()) < 1e-10, (value.item(), ref.item())
assert (grad - grad_ref).abs().max().item() < 1e-10 * grad_ref.abs().max().item() + 1e-14
from wae_fast import spec
from wae_fast._problem import Problem
def rbf_value(a, b, **options):
    problem = Problem(a, b, "rbf", spec.KERNEL_IDS["rbf"], (12.0,), True, False, False, "cpu")
    return cpu.block_sums_and_grads(problem, **options).value.item()
wide = rbf_value(x.detach(), y)
for isa in info["supported"]:
    assert abs(rbf_value(x.detach().float(), y.float(), isa=isa) - wide) < 1e-5, isa
print(f"  ok: wae_fast {wae_fast.__version__} from {where}; paths {info['compiled']}, selected {info['selected']}; "
      f"peak {cpu.peak_gflops(seconds=0.05):.0f} GFLOP/s")
EOF
)

echo "== build: sdist, then the wheel from the sdist"
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q --disable-pip-version-check build
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; exit 1; }
SDIST=$(ls "$WORK"/dist/wae_fast-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/wae_fast-*.whl)
grep -q "instruction-set paths compiled" "$WORK/build.log" || { tail -40 "$WORK/build.log"; exit 1; }
tar -tzf "$SDIST" > "$WORK/sdist.txt"
for f in csrc/build_config.json csrc/build_config.py csrc/cpu/mmd_cpu.h; do
  grep -qx "wae_fast-[^/]*/$f" "$WORK/sdist.txt" || { echo "the sdist lacks $f" >&2; exit 1; }
done
echo "  $(basename "$SDIST"), $(basename "$WHEEL")"

for artefact in "$SDIST" "$WHEEL"; do
  name=$(basename "$artefact")
  echo "== install $name into a fresh environment"
  venv="$WORK/venv-${name%%.tar.gz}"
  fresh_venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$artefact" > "$WORK/install.log" 2>&1 \
    || { tail -40 "$WORK/install.log"; exit 1; }
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  (cd "$WORK" && "$venv/bin/python" -c "$SMOKE" "$site/wae_fast")
done

echo "packaging check passed"
