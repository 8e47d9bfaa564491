"""Plot benchmarks/mmd_speed.py results against n (n = m), log-log, one line per provider and dtype.

    python benchmarks/plot_mmd_speed.py benchmarks/out/mmd_speed.jsonl -o mmd_speed.png
    python benchmarks/plot_mmd_speed.py $OUT/mmd_speed_gpu.jsonl --run all -o mmd_speed_gpu.png

One panel per (kernel, scales, mode) and d with timed n = m cases. --metric time (the CPU default): the
median time with its IQR band, and the dashed floor of the flop model (floor_ms: the minimal work at
the measured peak, benchmarks/mmd_flops.py). --metric pairs (the default for CUDA rows): pairs per
second, pairs = nm + n(n−1)/2 + m(m−1)/2, and the floor as the most pairs per second the peak allows
(one dashed line per dtype). A provider that ran out of memory or time says so in the legend ("OOM from
n=65536") and with an x on the top edge. Triton-interpreter rows (dry runs) are left out. By default only
the latest run in the file is drawn; --run all draws the newest row of each case over every run (a GPU
check appends one run per command), --run ID one run.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

COLORS = {"reference": "tab:red", "cpu": "tab:blue", "triton": "tab:green", "keops": "tab:purple",
          "compiled": "tab:orange", "chunked": "tab:brown"}
DTYPE_STYLES = {"float32": "-", "bfloat16": "--", "float16": "-.", "float64": ":"}
FLOOR_STYLES = {"float32": (0, (5, 3)), "bfloat16": (0, (1, 2)), "float16": (0, (3, 1, 1, 1)),
                "float64": (0, (8, 2))}
FAILED = ("OOM", "TIMEOUT", "error")


def row_key(r: dict) -> tuple:
    return (r["kernel"], r["scales"], r["mode"], r["d"], r["n"], r["m"], r["provider"], r.get("dtype", "float32"),
            bool(r.get("interpreter")))


def load_rows(path: Path, run: str | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a run killed mid-write leaves at most a torn last line
                continue
    if not rows:
        raise SystemExit(f"plot_mmd_speed: no rows in {path}")
    if run in (None, "latest"):
        run = rows[-1]["run_id"]
    if run != "all":
        rows = [r for r in rows if r["run_id"] == run]
        if not rows:
            raise SystemExit(f"plot_mmd_speed: no rows of run {run!r} in {path}")
    newest = {}
    for r in rows:  # the newest row of each (case, provider, dtype)
        newest[row_key(r)] = r
    return list(newest.values())


def series_label(provider: str, dtype: str, dtypes: set[str]) -> str:
    return provider if len(dtypes) == 1 else f"{provider} {dtype}"


def plot(rows: list[dict], out: Path, metric: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    square = [r for r in rows if r["n"] == r["m"] and r["status"] not in ("unavailable", "skipped")
              and not r.get("interpreter")]
    if metric is None:
        metric = "pairs" if any(r.get("device") == "cuda" for r in square) else "time"
    panels = defaultdict(list)
    for r in square:
        panels[(r["kernel"], r["scales"], r["mode"], r["d"])].append(r)
    panels = {k: v for k, v in panels.items() if any(r["status"] == "ok" for r in v)}
    if not panels:
        raise SystemExit("plot_mmd_speed: no timed n = m cases to plot")
    dtypes = {r.get("dtype", "float32") for r in square}
    row_keys = sorted({k[:3] for k in panels}, key=lambda k: (k[0], k[1], k[2] != "fwd"))
    dims = sorted({k[3] for k in panels})
    fig, axes = plt.subplots(len(row_keys), len(dims), figsize=(max(4.8 * len(dims), 6.4),
                                                                 3.8 * len(row_keys) + 0.7), squeeze=False)
    for i, (kernel, scales, mode) in enumerate(row_keys):
        for j, d in enumerate(dims):
            ax = axes[i][j]
            cases = panels.get((kernel, scales, mode, d), [])
            if not cases:
                ax.set_visible(False)
                continue
            draw_panel(ax, cases, metric, dtypes)
            ax.set_title(f"{kernel.upper()}, {scales} scale{'s' if scales > 1 else ''}, {mode}, d={d}", fontsize=10)
    first = rows[0]
    runs = sorted({r["run_id"] for r in rows})
    threads = f", {first['threads']} threads" if first.get("device") != "cuda" else ""
    fig.suptitle(f"wae_fast MMD² on {first['device_name']}{threads}, {', '.join(sorted(dtypes))}\n"
                 f"{f'run {runs[0]}' if len(runs) == 1 else f'{len(runs)} runs'}, wae_fast {first['wae_fast']}, "
                 f"torch {first['torch']}, commit {first.get('git_commit')}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_panel(ax, cases: list[dict], metric: str, dtypes: set[str]) -> None:
    by_series = defaultdict(list)
    for r in cases:
        by_series[(r["provider"], r.get("dtype", "float32"))].append(r)
    order = list(COLORS)
    for provider, dtype in sorted(by_series, key=lambda s: (order.index(s[0]) if s[0] in order else 99, s[1])):
        pts = sorted(by_series[(provider, dtype)], key=lambda r: r["n"])
        ok = [r for r in pts if r["status"] == "ok"]
        failed = [r for r in pts if r["status"] in FAILED]
        color = COLORS.get(provider)
        style = DTYPE_STYLES.get(dtype, "-")
        label = series_label(provider, dtype, dtypes)
        if failed:
            label += f" ({failed[0]['status']} from n={failed[0]['n']})"
        if ok:
            xs = [r["n"] for r in ok]
            if metric == "time":
                ax.plot(xs, [r["median_ms"] for r in ok], "o", linestyle=style, label=label, color=color)
                ax.fill_between(xs, [r["q25_ms"] for r in ok], [r["q75_ms"] for r in ok], color=color, alpha=0.15)
            else:
                ax.plot(xs, [r["pairs"] / (r["median_ms"] / 1e3) for r in ok], "o", linestyle=style,
                        label=label, color=color)
        elif failed:
            ax.plot([], [], "o", linestyle=style, label=label, color=color)
        for r in failed:  # an x on the top edge at each n where the provider failed
            ax.plot([r["n"]], [0.97], "x", color=color, markersize=9, mew=2,
                    transform=ax.get_xaxis_transform(), clip_on=False)
            ax.annotate(r["status"], (r["n"], 0.97), xycoords=ax.get_xaxis_transform(),
                        textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7, color=color)
    for dtype in sorted({r.get("dtype", "float32") for r in cases}):
        floor = sorted({(r["n"], r["floor_ms"], r["pairs"]) for r in cases
                        if r.get("dtype", "float32") == dtype and r.get("floor_ms")})
        if not floor:
            continue
        ys = [f[1] for f in floor] if metric == "time" else [f[2] / (f[1] / 1e3) for f in floor]
        label = "floor (peak)" if len(dtypes) == 1 else f"floor {dtype}"
        ax.plot([f[0] for f in floor], ys, linestyle=FLOOR_STYLES.get(dtype, "--"), color="0.45", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n = m")
    ax.set_ylabel("time (ms, median, IQR band)" if metric == "time" else "pairs per second (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a JSON-lines file written by benchmarks/mmd_speed.py")
    parser.add_argument("-o", "--output", default=None, help="PNG path (default: RESULTS with .png)")
    parser.add_argument("--run", default="latest", help="a run_id, 'latest' (default) or 'all'")
    parser.add_argument("--metric", choices=("time", "pairs"), default=None,
                        help="time per evaluation, or pairs per second (default: pairs for CUDA rows)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    out = Path(args.output) if args.output else results.with_suffix(".png")
    plot(load_rows(results, args.run), out, args.metric)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
