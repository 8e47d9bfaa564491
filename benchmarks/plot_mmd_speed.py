"""Plot benchmarks/mmd_speed.py results: time vs n (n = m), log-log, one line per provider.

    python benchmarks/plot_mmd_speed.py benchmarks/results/mmd_speed.jsonl -o benchmarks/results/mmd_speed.png

One panel per (kernel, scales, mode) and d that has n = m cases with timings; the dashed grey line is
the flop bound (the case's flops at the measured matmul rate). A provider that ran out of memory or time
says so in the legend ("OOM from n=32768"). By default only the latest run in the file is drawn
(--run ID for another, --run all for the newest row of each case over every run).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

COLORS = {"reference": "tab:red", "cpu": "tab:blue", "triton": "tab:green", "keops": "tab:purple"}


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
    for r in rows:  # the newest row of each (case, provider)
        newest[(r["kernel"], r["scales"], r["mode"], r["d"], r["n"], r["m"], r["provider"])] = r
    return list(newest.values())


def plot(rows: list[dict], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    square = [r for r in rows if r["n"] == r["m"] and r["status"] != "unavailable"]
    panels = defaultdict(list)
    for r in square:
        panels[(r["kernel"], r["scales"], r["mode"], r["d"])].append(r)
    panels = {k: v for k, v in panels.items() if any(r["status"] == "ok" for r in v)}
    if not panels:
        raise SystemExit("plot_mmd_speed: no timed n = m cases to plot")
    row_keys = sorted({k[:3] for k in panels}, key=lambda k: (k[0], k[1], k[2] != "fwd"))
    dims = sorted({k[3] for k in panels})
    fig, axes = plt.subplots(len(row_keys), len(dims), figsize=(max(4.6 * len(dims), 6.4),
                                                                 3.6 * len(row_keys) + 0.6), squeeze=False)
    for i, (kernel, scales, mode) in enumerate(row_keys):
        for j, d in enumerate(dims):
            ax = axes[i][j]
            cases = panels.get((kernel, scales, mode, d), [])
            if not cases:
                ax.set_visible(False)
                continue
            by_provider = defaultdict(list)
            for r in cases:
                by_provider[r["provider"]].append(r)
            for provider in sorted(by_provider, key=lambda p: list(COLORS).index(p) if p in COLORS else 99):
                pts = sorted(by_provider[provider], key=lambda r: r["n"])
                ok = [r for r in pts if r["status"] == "ok"]
                failed = [r for r in pts if r["status"] in ("OOM", "TIMEOUT", "error")]
                label = provider
                if failed:
                    first = failed[0]
                    label += f" ({first['status']} from n={first['n']})"
                if ok:
                    ax.plot([r["n"] for r in ok], [r["median_ms"] for r in ok], "o-", label=label,
                            color=COLORS.get(provider))
                    ax.fill_between([r["n"] for r in ok], [r["q25_ms"] for r in ok],
                                    [r["q75_ms"] for r in ok], color=COLORS.get(provider), alpha=0.15)
                elif failed:
                    ax.plot([], [], "o-", label=label, color=COLORS.get(provider))
                for r in failed:  # an x on the top edge at each n where the provider failed
                    ax.plot([r["n"]], [0.97], "x", color=COLORS.get(provider), markersize=9, mew=2,
                            transform=ax.get_xaxis_transform(), clip_on=False)
                    ax.annotate(r["status"], (r["n"], 0.97), xycoords=ax.get_xaxis_transform(),
                                textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7,
                                color=COLORS.get(provider))
            bound = sorted({(r["n"], r["flops"] / (r["matmul_gflops"] * 1e9) * 1e3)
                            for r in cases if r.get("matmul_gflops")})
            if bound:
                ax.plot([b[0] for b in bound], [b[1] for b in bound], "--", color="0.5", label="flop bound")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{kernel.upper()}, {scales} scale{'s' if scales > 1 else ''}, {mode}, d={d}",
                         fontsize=10)
            ax.set_xlabel("n = m")
            ax.set_ylabel("time (ms, median, IQR band)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    first = rows[0]
    runs = sorted({r["run_id"] for r in rows})
    fig.suptitle(f"wae_fast MMD² on {first['device_name']}, {first['threads']} threads, {first['dtype']}\n"
                 f"{f'run {runs[0]}' if len(runs) == 1 else f'{len(runs)} runs'}, wae_fast {first['wae_fast']}, "
                 f"torch {first['torch']}, commit {first.get('git_commit')}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a JSON-lines file written by benchmarks/mmd_speed.py")
    parser.add_argument("-o", "--output", default=None, help="PNG path (default: RESULTS with .png)")
    parser.add_argument("--run", default="latest", help="a run_id, 'latest' (default) or 'all'")
    args = parser.parse_args(argv)
    results = Path(args.results)
    out = Path(args.output) if args.output else results.with_suffix(".png")
    plot(load_rows(results, args.run), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
