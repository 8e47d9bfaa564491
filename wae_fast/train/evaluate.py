"""Compare finished runs side by side: a table (Markdown, CSV, JSON) and one combined figure.

    python -m wae_fast.train.evaluate RUN_DIR [RUN_DIR ...] [--out DIR] [--recompute]
    python -m wae_fast.train evaluate RUN_DIR [RUN_DIR ...]

Each run's final_metrics.json (written at the end of training) is read; runs without one, or every run
with --recompute, are evaluated again from their checkpoint (held-out reconstruction, MMD, FID-LeNet, KID).
Lower is better everywhere; the floor is the FID-LeNet / KID of training images against the test images.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

COLUMNS = (("run", "run", "{}"), ("model", "model", "{}"), ("epochs", "epochs", "{}"),
           ("train_time_s", "train time (s)", "{:.0f}"),
           ("images_per_s", "images/s", "{:.0f}"), ("test_recon", "test recon ‖x−G(Q(x))‖²", "{:.2f}"),
           ("test_mmd", "test MMD²(Q_Z,P_Z)", "{:.4f}"), ("test_mmd_null_q95", "null's 95 %", "{:.2g}"),
           ("test_mmd_p", "p (codes vs prior)", "{:.3f}"), ("test_mmd_agg_p", "p, MMD-FUSE", "{:.3f}"),
           ("fid_lenet", "FID-LeNet", "{:.2f}"),
           ("fid_lenet_floor", "FID floor", "{:.2f}"), ("kid", "KID", "{:.3f}"), ("kid_std", "KID std", "{:.3f}"),
           ("kid_floor", "KID floor", "{:.3f}"), ("fid_inception", "FID (Inception)", "{:.2f}"))


def load_run(run_dir: Path, recompute: bool = False, overrides: dict | None = None, log=None) -> dict:
    """A run's final metrics: its final_metrics.json, or (``recompute``, or no such file) a Trainer's
    ``finish()`` from its checkpoint, logging to ``log`` (default: logging)."""
    run_dir = Path(run_dir)
    final = run_dir / "final_metrics.json"
    if final.is_file() and not recompute:
        row = json.loads(final.read_text())
    else:
        if not (run_dir / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{run_dir}: expected final_metrics.json or checkpoint.pt of a finished run")
        from .trainer import Trainer
        trainer = Trainer.from_checkpoint(run_dir, overrides or {}, progress=False, log=log)
        row = trainer.finish()
    row["run"] = run_dir.name
    row["path"] = str(run_dir)
    config = run_dir / "config.json"
    if config.is_file():
        row["config"] = json.loads(config.read_text())
    return row


# settings that do not change what is trained: runs differing only in these are grouped together
_NOT_A_SETTING = {"seed", "out", "device", "threads", "cache_dir", "eval_every", "inception_weights", "data_dir",
                  "checkpoint_every", "channels_last", "final_eval"}


def _group_key(row: dict) -> str:
    config = row.get("config") or {"model": row.get("model", row["run"])}
    return json.dumps({k: v for k, v in config.items() if k not in _NOT_A_SETTING}, sort_keys=True)


def _group_labels(keys: list[str]) -> dict[str, str]:
    """model name, plus the settings that differ from the first group of the same model."""
    labels, first = {}, {}
    for key in keys:
        config = json.loads(key)
        model = config.get("model", "?")
        base = first.setdefault(model, config)
        diff = [f"{k}={v}" for k, v in config.items() if base.get(k) != v]
        labels[key] = model + (f" ({', '.join(diff)})" if diff else "")
    return labels


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            value = r.get(key)
            cells.append("—" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY_KEYS = (("test_recon", "test recon", "{:.2f}"), ("test_mmd", "test MMD²", "{:.4f}"),
                ("fid_lenet", "FID-LeNet", "{:.1f}"), ("kid", "KID", "{:.1f}"))


def summary_table(rows: list[dict]) -> str:
    """Mean ± std over runs that differ only in their seed (only when some setting has several runs)."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    labels = _group_labels(list(groups))
    floors = [r["fid_lenet_floor"] for r in rows if "fid_lenet_floor" in r]
    lines = ["| model (settings) | runs | " + " | ".join(k[1] for k in SUMMARY_KEYS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_KEYS)]
    for group_key, group in groups.items():
        cells = []
        for key, _, fmt in SUMMARY_KEYS:
            values = [r[key] for r in group if r.get(key) is not None]
            if not values:
                cells.append("—")
            elif len(values) == 1:
                cells.append(fmt.format(values[0]))
            else:
                cells.append(f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}")
        lines.append(f"| {labels[group_key]} | {len(group)} | " + " | ".join(cells) + " |")
    note = (f"\nmean ± std over runs; FID-LeNet floor (train vs test) {statistics.mean(floors):.2f}\n"
            if floors else "\n")
    return "\n".join(lines) + "\n" + note


def combined_figure(rows: list[dict], path: Path) -> Path:
    from .plots import _pyplot
    plt = _pyplot()
    import matplotlib.image as mpimg

    n = len(rows)
    fig = plt.figure(figsize=(4.2 * max(n, 3), 12))
    outer = fig.add_gridspec(3, 1, height_ratios=(1.0, 1.0, 0.7))
    for i, name in enumerate(("reconstructions.png", "samples.png")):
        grid = outer[i].subgridspec(1, n)
        for j, r in enumerate(rows):
            ax = fig.add_subplot(grid[j])
            image = Path(r["path"]) / name
            if image.is_file():
                ax.imshow(mpimg.imread(image), cmap="gray")
            title = f"{r['run']}: " + ("test reconstructions (odd rows real)" if i == 0 else
                                        f"prior samples, FID-LeNet {r.get('fid_lenet', float('nan')):.1f}")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    curves = outer[2].subgridspec(1, 3)
    ax_rec, ax_mmd, ax_bar = (fig.add_subplot(curves[k]) for k in range(3))
    for r in rows:
        metrics = Path(r["path"]) / "metrics.jsonl"
        if metrics.is_file():
            hist = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            hist = [h for h in hist if "test_recon" in h]
            ax_rec.plot([h["epoch"] for h in hist], [h["test_recon"] for h in hist], label=r["run"])
            ax_mmd.plot([h["epoch"] for h in hist], [h.get("test_mmd", float("nan")) for h in hist], label=r["run"])
    ax_rec.set_title("test reconstruction cost", fontsize=9)
    ax_mmd.set_title("test MMD²(Q_Z, P_Z)", fontsize=9)
    ax_mmd.set_yscale("symlog", linthresh=1e-3)
    for ax in (ax_rec, ax_mmd):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    names = [r["run"] for r in rows]
    ax_bar.bar(names, [r.get("fid_lenet", 0.0) for r in rows], color="tab:blue")
    floors = [r["fid_lenet_floor"] for r in rows if "fid_lenet_floor" in r]
    if floors:
        ax_bar.axhline(sum(floors) / len(floors), color="k", ls="--", label="floor (train vs test)")
        ax_bar.legend(fontsize=7)
    ax_bar.set_title("FID-LeNet of prior samples (lower is better)", fontsize=9)
    ax_bar.tick_params(axis="x", labelsize=7, rotation=15)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    plt.close(fig)
    return atomic_write_bytes(path, _small_png(buffer.getvalue()))


def _small_png(png: bytes) -> bytes:
    """A 256-colour version of a PNG (a third of the size; the figure is mostly grey digits)."""
    try:
        from PIL import Image
    except ImportError:
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    from .cli import OneLineErrorParser

    p = OneLineErrorParser(prog="python -m wae_fast.train.evaluate", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders written by python -m wae_fast.train")
    p.add_argument("--out", help="folder for comparison.{md,csv,json,png} (default: print the table only)")
    p.add_argument("--recompute", action="store_true", help="re-evaluate every run from its checkpoint")
    p.add_argument("--fid-samples", type=int, help="prior samples for FID-LeNet/KID when recomputing")
    p.add_argument("--cache-dir", help="FID-LeNet classifier cache when recomputing")
    p.add_argument("--no-figure", action="store_true")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("fid_samples", args.fid_samples), ("cache_dir", args.cache_dir)) if v}
    try:
        rows = [load_run(Path(r), args.recompute, overrides, log=print) for r in args.runs]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classifiers = {r.get("classifier") for r in rows if r.get("classifier")}
    if len(classifiers) > 1:
        print("warning: the runs were scored with different FID-LeNet classifiers (different data or seeds); "
              "their FID-LeNet/KID values are not comparable", file=sys.stderr)
    table = markdown_table(rows)
    summary = summary_table(rows)
    if summary:
        table += "\n" + summary
    print(table, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "comparison.md", table)
        atomic_write_json(out / "comparison.json", rows)
        keys = [c[0] for c in COLUMNS if any(c[0] in r for r in rows)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "comparison.csv", buffer.getvalue())
        if not args.no_figure:
            combined_figure(rows, out / "comparison.png")
        print(f"wrote {out}/comparison.{{md,csv,json{',png' if not args.no_figure else ''}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
