"""Command line: the MMD permutation test of two samples stored as .npy files.

    python -m wae_fast.stats x.npy y.npy --permutations 1000
    python -m wae_fast.stats x.npy y.npy --kernel rbf --sigma2 median --plot null.png --json result.json

Each file holds a 2-D array [rows, features] (float16/32/64). Prints the unbiased MMD², the p-value and
the time; --plot draws the null distribution with the statistic marked, --json writes the result. Both
create missing folders. Checked before the test runs: the device, the memory the labellings need,
(P + 1)·(⌈(n + m)/8⌉ + 64) bytes for P permutations (the labels as bits, then the float64 sums and the
null), against the memory available, and that --plot and --json can be written. Bad input: one line on
stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from .labels import LABELLING_BYTES, available_memory, check_label_memory, memory_needed  # noqa: F401
from .permutation import MMDTestResult, mmd_test


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _sigma2(text: str):
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number or 'median', got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(prog="python -m wae_fast.stats", description=__doc__,
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
    add_aggregate_arguments(p)
    return p


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device ({' '.join(str(exc).split())})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build that finds no GPU"
        raise ValueError(f"--device {name}: CUDA is not available (torch {torch.__version__} is {build}); "
                         "use --device cpu")
    return device


def _check_writable(option: str, path: str) -> None:
    """ValueError naming ``option`` unless ``path`` can be written, its missing folders created."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name")
    for folder in target.parents:
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {path}: {folder} is not writable")
            return
        if folder.exists():
            raise ValueError(f"{option} {path}: {folder} is a file, not a folder")


def _check_memory(n: int, m: int, permutations: int) -> None:
    check_label_memory(n, m, permutations, "--permutations")


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
    if args.aggregate:
        return run_aggregate(args)
    try:
        device = _device(args.device)
        for option, path in (("--plot", args.plot), ("--json", args.json)):
            if path:
                _check_writable(option, path)
        x = _load(args.x, "x")
        y = _load(args.y, "y")
        _check_memory(*(t.shape[0] if t.dim() else 1 for t in (x, y)), args.permutations)
        x, y = x.to(device), y.to(device)
        start = time.perf_counter()
        result = mmd_test(x, y, args.kernel, c=args.c, sigma2=args.sigma2, scales=args.scales,
                          permutations=args.permutations, seed=args.seed, backend=args.backend)
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
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
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row) + "\n")
        print(f"result → {out}")
    return 0


# ----------------------------------------------------------------------------------------------------
# --aggregate: the aggregated tests over a collection of bandwidths (wae_fast.stats.aggregate)
# ----------------------------------------------------------------------------------------------------

def add_aggregate_arguments(p: argparse.ArgumentParser) -> None:
    """--aggregate fuse|mmdagg (with --bandwidths, --alpha): mmd_agg_test instead of mmd_test."""
    group = p.add_argument_group("aggregated test (python -m wae_fast.stats x.npy y.npy --aggregate fuse)")
    group.add_argument("--aggregate", choices=("fuse", "mmdagg"),
                       help="MMD-FUSE or MMDAgg over a collection of bandwidths of --kernel (--c, --sigma2 and "
                            "--scales are not used)")
    group.add_argument("--bandwidths", type=_bandwidth_list,
                       help="comma-separated sigma2 (rbf) or c (imq) values (default: the geometric collection "
                            "of wae_fast.stats.default_bandwidths)")
    group.add_argument("--alpha", type=float, default=0.05, help="level of the aggregated test")


def _bandwidth_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--bandwidths: expected comma-separated numbers, got {text!r}") from exc


def plot_aggregate(result, path: str) -> Path:
    """One histogram per bandwidth: its null with its statistic (and, for MMDAgg, its corrected threshold)
    marked; for MMD-FUSE one more panel, the fused statistic against its null. Saved as a PNG."""
    from ..train.plots import _pyplot

    plt = _pyplot()
    count = len(result.bandwidths)
    panels = count + (1 if result.method == "fuse" else 0)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    bins = min(40, max(10, result.permutations // 10))
    for s in range(count):
        ax = axes[s // cols][s % cols]
        ax.hist(result.nulls[s].numpy(), bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(float(result.statistics[s]), color="tab:red", lw=2, label="statistic")
        if result.thresholds is not None:
            ax.axvline(float(result.thresholds[s]), color="black", ls="--", lw=1, label="corrected threshold")
        ax.set_title(f"{result.kernels[s]} {result.bandwidths[s]:.3g}", fontsize=8)
        ax.tick_params(labelsize=6)
    if result.method == "fuse":
        ax = axes[count // cols][count % cols]
        ax.hist(result.null.numpy(), bins=bins, color="tab:green", alpha=0.8)
        ax.axvline(result.statistic, color="tab:red", lw=2)
        ax.set_title(f"FUSE: p = {result.p_value:.4g}", fontsize=8)
        ax.tick_params(labelsize=6)
    for extra in range(panels, rows * cols):
        axes[extra // cols][extra % cols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{result.method}: n = {result.n}, m = {result.m}, {result.permutations} permutations, "
                 f"reject at α = {result.alpha:g}: {result.reject}", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def run_aggregate(args: argparse.Namespace) -> int:
    """The --aggregate command: prints the decision and one line per bandwidth; --plot, --json."""
    from .aggregate import mmd_agg_test

    try:
        device = _device(args.device)
        for option, path in (("--plot", args.plot), ("--json", args.json)):
            if path:
                _check_writable(option, path)
        x = _load(args.x, "x")
        y = _load(args.y, "y")
        drawn = args.permutations * (2 if args.aggregate == "mmdagg" else 1)  # MMDAgg: two permutation sets
        _check_memory(*(t.shape[0] if t.dim() else 1 for t in (x, y)), drawn)
        x, y = x.to(device), y.to(device)
        start = time.perf_counter()
        result = mmd_agg_test(x, y, args.kernel, bandwidths=args.bandwidths, method=args.aggregate,
                              permutations=args.permutations, alpha=args.alpha, seed=args.seed,
                              backend=args.backend)
        seconds = time.perf_counter() - start
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    singles = [(1.0 + float((result.nulls[s] >= result.statistics[s]).sum())) / (1.0 + result.permutations)
               for s in range(len(result.bandwidths))]
    summary = (f"p-value {result.p_value:.6g}" if result.method == "fuse"
               else f"correction u {result.correction:.6g}")
    print(f"{result.method}: reject {result.reject} at alpha {result.alpha:g}; statistic {result.statistic:.6g}; "
          f"{summary} ({result.permutations} permutations, seed {result.seed})")
    for s, (kernel, bandwidth) in enumerate(zip(result.kernels, result.bandwidths, strict=True)):
        threshold = "" if result.thresholds is None else f"  threshold {float(result.thresholds[s]):.6g}"
        print(f"  {kernel} {bandwidth:<12.6g} MMD² {float(result.statistics[s]):<13.6g} single-test p "
              f"{singles[s]:.4g}{threshold}")
    print(f"n {result.n}, m {result.m}, backend {result.backend}, time {seconds:.3f} s")
    if args.plot:
        print(f"nulls → {plot_aggregate(result, args.plot)}")
    if args.json:
        row = dict(method=result.method, reject=result.reject, p_value=result.p_value, statistic=result.statistic,
                   statistics=result.statistics.tolist(), kernels=list(result.kernels),
                   bandwidths=list(result.bandwidths), single_p_values=singles,
                   thresholds=None if result.thresholds is None else result.thresholds.tolist(),
                   correction=result.correction, alpha=result.alpha, n=result.n, m=result.m,
                   permutations=result.permutations, seed=result.seed, backend=result.backend, seconds=seconds)
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
