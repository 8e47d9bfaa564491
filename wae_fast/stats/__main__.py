"""Command line: the MMD permutation test of two samples stored as .npy files.

    python -m wae_fast.stats x.npy y.npy --permutations 1000
    python -m wae_fast.stats x.npy y.npy --kernel rbf --sigma2 median --plot null.png --json result.json

Each file holds a 2-D array [rows, features] (float16/32/64). Prints the unbiased MMD², the p-value and
the time; --plot draws the null distribution with the statistic marked, --json writes the result.
Exit status 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .permutation import MMDTestResult, mmd_test


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--scales: expected comma-separated numbers, got {text!r}") from exc


def _sigma2(text: str):
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sigma2: expected a number or 'median', got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wae_fast.stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("x", help=".npy file: the first sample [n, d]")
    p.add_argument("y", help=".npy file: the second sample [m, d]")
    p.add_argument("--kernel", choices=("imq", "rbf"), default="imq")
    p.add_argument("--c", type=float, help="IMQ constant (default 2·d)")
    p.add_argument("--sigma2", type=_sigma2, help="RBF bandwidth: a number or 'median' (default 2·d)")
    p.add_argument("--scales", type=_scales, default=(1.0,), help="comma-separated multipliers of c / sigma2")
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("auto", "cpu", "triton", "reference"), default="auto")
    p.add_argument("--device", default="cpu", help="where the samples go: cpu, cuda, cuda:1 ...")
    p.add_argument("--plot", metavar="PNG", help="draw the null distribution with the statistic marked")
    p.add_argument("--json", metavar="FILE", help="write statistic, p-value, null and settings as JSON")
    return p


def _load(path: str, name: str) -> torch.Tensor:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read {path} as a .npy array ({exc})") from exc
    if array.dtype.kind != "f":
        raise ValueError(f"{name}: {path} holds {array.dtype} values; expected floating-point")
    return torch.from_numpy(np.ascontiguousarray(array))


def plot_null(result: MMDTestResult, path: str) -> Path:
    """A histogram of the null with the statistic marked, saved as a PNG."""
    from ..train.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(result.null.numpy(), bins=min(60, max(10, result.permutations // 10)), color="tab:blue", alpha=0.8,
            label=f"null ({result.permutations} permutations)")
    ax.axvline(result.statistic, color="tab:red", lw=2, label=f"statistic {result.statistic:.4g}")
    ax.set_xlabel("unbiased MMD²")
    ax.set_title(f"{result.kernel} kernel, n = {result.n}, m = {result.m}: p = {result.p_value:.4g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        x = _load(args.x, "x").to(args.device)
        y = _load(args.y, "y").to(args.device)
        start = time.perf_counter()
        result = mmd_test(x, y, args.kernel, c=args.c, sigma2=args.sigma2, scales=args.scales,
                          permutations=args.permutations, seed=args.seed, backend=args.backend)
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"statistic (unbiased MMD²) {result.statistic:.6g}")
    print(f"p-value {result.p_value:.6g} ({result.permutations} permutations, seed {result.seed})")
    print(f"n {result.n}, m {result.m}, kernel {result.kernel}, bandwidths "
          f"{', '.join(f'{b:g}' for b in result.bandwidths)}, backend {result.backend}, time {seconds:.3f} s")
    if args.plot:
        print(f"null distribution → {plot_null(result, args.plot)}")
    if args.json:
        row = dict(statistic=result.statistic, p_value=result.p_value, null=result.null.tolist(), n=result.n,
                   m=result.m, kernel=result.kernel, bandwidths=list(result.bandwidths),
                   permutations=result.permutations, seed=result.seed, backend=result.backend, seconds=seconds)
        Path(args.json).write_text(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
