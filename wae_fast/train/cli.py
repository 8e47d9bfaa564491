"""Command line: ``python -m wae_fast.train --model wae-mmd|wae-gan|vae [options]``.

    python -m wae_fast.train --model wae-mmd                      # small preset, embedded MNIST
    python -m wae_fast.train --model wae-gan --preset paper-mnist --data-dir ~/data/mnist
    python -m wae_fast.train --model wae-mmd --official-extras    # 0.05 recon factor, 7 IMQ scales, pre-training
    python -m wae_fast.train --model wae-mmd --device cuda --amp bf16 --channels-last
    python -m wae_fast.train --resume runs/wae-mmd-small-seed0 --epochs 60
    python -m wae_fast.train evaluate runs/*-small-seed0 --out comparison/
    torchrun --standalone --nproc_per_node 2 -m wae_fast.train --model wae-mmd --batch-size 100
                                                                  # data-parallel: --batch-size is global

Every option left out takes the preset's value (see wae_fast/train/config.py); the defaults shown are
the small preset's. Under torchrun (WORLD_SIZE > 1) the ranks train one model data-parallel (gloo on CPU,
NCCL on GPU; see wae_fast/train/distributed.py): --batch-size is the global batch, rank 0 alone logs and
writes, and --resume continues a run with any number of processes.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from .config import OFFICIAL_EXTRAS, TrainConfig, make_config


def _numbers(convert, count: int | None = None):
    def parse(text: str) -> tuple:
        values = tuple(convert(s) for s in text.split(",") if s)
        if count is not None and len(values) != count:
            raise ValueError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def _parser_for(hint):
    """The text → value function of a config field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return _numbers(args[0], None if Ellipsis in args else len(args))
    if args:                                   # X | None
        return _parser_for(args[0])
    return hint


def _argparse_type(name: str, parse, minimum=None):
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError as exc:
            expected = {int: "an integer", float: "a number"}.get(parse)
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}" if expected else str(exc)) from exc
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    convert.__name__ = name
    return convert


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2), without the long usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, in the field's group, defaulting to None (= the preset's value)."""
    hints = typing.get_type_hints(TrainConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        group = groups[meta["group"]]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{meta['help']} (default {f.default!r})" if f.default is not None else meta["help"]
        help_text = help_text.replace("%", "%%")
        if hints[f.name] is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
            continue
        parse = meta["parse"] or _parser_for(hints[f.name])
        group.add_argument(flag, dest=f.name, default=None, choices=meta["choices"], help=help_text,
                           type=_argparse_type(f.name, parse, meta["minimum"]),
                           metavar=None if meta["choices"] else f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m wae_fast.train", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (default: the --out folder) exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if the run folder has a checkpoint")
    p.add_argument("--official-extras", action="store_true",
                   help="the official code's extras: --recon-factor 0.05 --mmd-scales official --pretrain-steps 200")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    add_config_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from .evaluate import main as evaluate_main
        return evaluate_main(argv[1:])
    args = build_parser().parse_args(argv)
    from . import distributed as ddp
    if not ddp.launched_by_torchrun():
        return run_training(args)
    dist_run = ddp.start()
    try:
        return run_training(args, dist_run)
    finally:
        ddp.stop(dist_run)


def check_run_folder(out: Path) -> None:
    """ValueError naming --out when ``out`` or a folder above it exists and is not a folder."""
    for folder in (out, *out.parents):
        if folder.is_dir():
            return
        if folder.exists():
            raise ValueError(f"--out {out}: {folder} exists and is not a folder, so the run folder cannot be "
                             "made there; pass another --out")


def run_training(args, dist_run=None) -> int:
    """Build or resume the trainer the options describe and train; the exit status. ``dist_run``: this
    process's place in a torchrun launch (rank 0 alone prints)."""
    from .trainer import NonFiniteLossError, Trainer

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    model = options.pop("model") or TrainConfig.model
    preset = options.pop("preset") or TrainConfig.preset
    if args.official_extras:
        for key, value in OFFICIAL_EXTRAS.items():
            options[key] = value if options[key] is None else options[key]
    main_rank = dist_run is None or dist_run.is_main
    say = print if main_rank else (lambda *a, **k: None)
    kwargs = dict(progress=not args.no_progress, plots=not args.no_plots, log=say, dist=dist_run)
    try:
        if args.resume is not None:
            run_dir = Path(args.resume) if args.resume is not True else Path(args.out) if args.out else None
            if run_dir is None:
                seed = args.seed if args.seed is not None else TrainConfig.seed
                run_dir = Path("runs") / f"{model}-{preset}-seed{seed}"
            explicit = {k: v for k, v in options.items() if v is not None and k != "out"}
            trainer = Trainer.from_checkpoint(run_dir, explicit, **kwargs)
            say(f"resuming {run_dir} at epoch {trainer.epoch} (step {trainer.step}) of {trainer.cfg.epochs}")
            if trainer.epoch >= trainer.cfg.epochs:
                if not (trainer.out / "final_metrics.json").exists() and trainer.final_eval:
                    if main_rank:
                        trainer.finish()
                else:
                    say("nothing to do: the run has finished (pass a larger --epochs to continue)")
                return 0
        else:
            cfg = make_config(preset, model, **options)
            out = Path(cfg.out) if cfg.out else Path("runs") / f"{cfg.model}-{cfg.preset}-seed{cfg.seed}"
            check_run_folder(out)
            if (out / "checkpoint.pt").exists() and not args.overwrite:
                print(f"error: {out} already holds a run; pass --resume to continue it, --overwrite to start "
                      "afresh, or --out for another folder", file=sys.stderr)
                return 2
            cfg.out = str(out)
            trainer = Trainer(cfg, out, **kwargs)
        trainer.fit()
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
