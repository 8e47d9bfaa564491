"""Accuracy of the Triton backend against float64 on two distributions, value and gradient, one row each.

    python scripts/gpu_accuracy.py --out rows.jsonl                          # n = m = 65536 on the GPU
    python scripts/gpu_accuracy.py --dry-run --out rows.jsonl                # CPU, Triton's interpreter, tiny

For each (dtype, d, kernel, scales) and each pair of distributions

    same     x ~ N(0, I), y ~ N(0, I)           MMD² ≈ 1/n: its three block sums cancel, the relative
                                                error of the value magnifies that cancellation
    shifted  x ~ N(0, I), y ~ N(0.1, 1.1² I)    MMD² of order 10⁻², the tuning sweep's pair

the value and ∂/∂x of wae_fast.mmd on the dtype-rounded inputs are compared with the Triton backend in
float64 on the same rounded inputs (the fused float64 sweep, not the norm expansion in float32):
value_rel_err = |v − v₆₄| / |v₆₄|, grad_rel_err = ‖g − g₆₄‖ / ‖g₆₄‖ (Frobenius), grad_max_err =
max|g − g₆₄| / max|g₆₄|. Rows are JSON lines with the device name and the versions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: (dtype, d, kernel, scales) of the rows: the issue's benchmark rows.
CASES = [("float32", 8, "imq", 1), ("float32", 64, "imq", 1), ("bfloat16", 64, "imq", 1), ("float32", 8, "imq", 7),
         ("float32", 8, "rbf", 7)]
DISTRIBUTIONS = {"same": (0.0, 1.0), "shifted": (0.1, 1.1)}


def inputs(n: int, d: int, shift: float, spread: float, dtype, device):
    import torch

    g = torch.Generator().manual_seed(d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * spread + shift
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def main() -> int:
    import torch

    import wae_fast
    from wae_fast.kernels import OFFICIAL_SCALES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU tensors through the interpreter, n = 64")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    n = 64 if args.dry_run else args.n
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)"
    with open(out, "a", encoding="utf-8") as f:
        for dtype_name, d, kernel, scales in CASES:
            dtype = getattr(torch, dtype_name)
            chosen = (1.0,) if scales == 1 else tuple(OFFICIAL_SCALES)
            for dist, (shift, spread) in DISTRIBUTIONS.items():
                t0 = time.perf_counter()
                x, y = inputs(n, d, shift, spread, dtype, device)
                xg = x.clone().requires_grad_(True)
                value = wae_fast.mmd(xg, y, kernel, scales=chosen, backend="triton")
                value.backward()
                x64 = x.double().requires_grad_(True)
                want = wae_fast.mmd(x64, y.double(), kernel, scales=chosen, backend="triton")
                want.backward()
                g, g64 = xg.grad.double(), x64.grad
                row = dict(device=device, device_name=name, torch=torch.__version__, wae_fast=wae_fast.__version__,
                           dtype=dtype_name, n=n, m=n, d=d, kernel=kernel, scales=scales, distribution=dist,
                           value=float(value.detach()), value_f64=float(want.detach()),
                           value_rel_err=abs(float(value.detach()) - float(want.detach())) / abs(float(want.detach())),
                           grad_rel_err=float((g - g64).norm() / g64.norm()),
                           grad_max_err=float((g - g64).abs().max() / g64.abs().max()),
                           seconds=round(time.perf_counter() - t0, 2))
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"{dtype_name:9s} d={d:<3d} {kernel}x{scales} {dist:8s} value {row['value']:.6g} "
                      f"(rel err {row['value_rel_err']:.1e}), grad rel err {row['grad_rel_err']:.1e} "
                      f"(max {row['grad_max_err']:.1e})", flush=True)
                del x, y, xg, x64
                if device == "cuda":
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and "--dry-run" in sys.argv:
        sys.exit("--dry-run needs TRITON_INTERPRET=1 (set before triton is imported)")
    sys.exit(main())
