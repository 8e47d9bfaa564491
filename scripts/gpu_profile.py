"""One fused MMD² step of the Triton backend, for a profiler (scripts/gpu_profile.sh runs it under Nsight Compute).

    ncu --clock-control none --target-processes all -k regex:_run_task_kernel -c 2 --set full \
        -o $OUT/mmd_profile python scripts/gpu_profile.py --n 65536 --d 64 --dtype float32
    ncu --import $OUT/mmd_profile.ncu-rep --page details --csv > $OUT/mmd_profile.csv

It warms up (compiles) first, so the profiled launches are the steady-state ones: the x-rows launch
(within FULL + cross, with ∂/∂x) and the y-rows launch (within TRIANGLE). Prints the step's time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65536, help="n = m")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"))
    parser.add_argument("--kernel", default="imq", choices=("imq", "rbf"))
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    import torch

    import wae_fast

    if not torch.cuda.is_available():
        sys.exit("gpu_profile: needs a CUDA device")
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.n, args.d, generator=g).to("cuda", dtype).requires_grad_(True)
    y = (torch.randn(args.n, args.d, generator=g) * 1.1 + 0.1).to("cuda", dtype)
    for _ in range(args.warmup):
        x.grad = None
        wae_fast.mmd(x, y, args.kernel, backend="triton").backward()
    torch.cuda.synchronize()
    x.grad = None
    start = time.perf_counter()
    value = wae_fast.mmd(x, y, args.kernel, backend="triton")
    value.backward()
    torch.cuda.synchronize()
    print(f"gpu_profile: n = m = {args.n}, d = {args.d}, {args.dtype}, {args.kernel}: value {value.item():.6g}, "
          f"{(time.perf_counter() - start) * 1e3:.2f} ms (value + d/dx)")


if __name__ == "__main__":
    main()
