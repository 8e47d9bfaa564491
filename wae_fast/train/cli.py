"""Command line: ``python -m wae_fast.train --model wae-mmd|wae-gan|vae [options]``.

    python -m wae_fast.train --model wae-mmd                      # small preset, embedded MNIST, ~2–3 min
    python -m wae_fast.train --model wae-gan --preset paper-mnist --data-dir ~/data/mnist
    python -m wae_fast.train --model wae-mmd --official-extras    # 0.05 recon factor, 7 IMQ scales, pre-training
    python -m wae_fast.train --resume runs/wae-mmd-small-seed0 --epochs 60
    python -m wae_fast.train evaluate runs/*-small-seed0 --out comparison/

Every option left out takes the preset's value (see wae_fast/train/config.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ARCHS, DATASETS, MODELS, PRESETS, make_config

MMD_SCALE_NAMES = {"paper": (1.0,), "official": (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)}


def _scales(text: str) -> tuple[float, ...]:
    if text in MMD_SCALE_NAMES:
        return MMD_SCALE_NAMES[text]
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'paper', 'official' or comma-separated numbers, "
                                         f"got {text!r}") from exc


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(s) for s in text.split(",") if s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wae_fast.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="wae-mmd")
    p.add_argument("--preset", choices=tuple(PRESETS), default="small")
    p.add_argument("--out", help="run folder (default runs/<model>-<preset>-seed<seed>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (default: the --out folder) exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if the run folder has a checkpoint")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS)
    g.add_argument("--data-dir", help="MNIST IDX folder, or the folder holding img_align_celeba/")
    g.add_argument("--data-seed", type=int, help="shuffle/split seed of the embedded 5k digits (default 0)")
    g.add_argument("--n-test", type=int, help="held-out images of the embedded 5k digits (default 1000)")
    g.add_argument("--max-images", type=int, help="use at most this many training images")
    g = p.add_argument_group("model and objective")
    g.add_argument("--arch", choices=ARCHS)
    g.add_argument("--d-z", dest="d_z", type=int)
    g.add_argument("--sigma-z2", dest="sigma_z2", type=float, help="prior variance σ_z² (default 1)")
    g.add_argument("--lam", type=float, help="λ (default 10)")
    g.add_argument("--mmd-scales", type=_scales, help="'paper' (one IMQ kernel, default), 'official' (7 scales) "
                                                      "or comma-separated multipliers of C = 2·d_z·σ_z²")
    g.add_argument("--mmd-backend", choices=("auto", "cpu", "triton", "reference"))
    g.add_argument("--disc-width", type=int)
    g.add_argument("--disc-layers", type=int)
    g.add_argument("--vae-sigma-g2", type=float, help="Gaussian VAE decoder variance (CelebA; default 0.5)")
    g.add_argument("--recon-factor", type=float, help="scale of the squared cost (official code: 0.05)")
    g.add_argument("--pretrain-steps", type=int, help="encoder pre-training steps (official code: 200)")
    g.add_argument("--official-extras", action="store_true",
                   help="the official code's extras: --recon-factor 0.05 --mmd-scales official --pretrain-steps 200")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--lr-milestones", type=_ints, help="epochs after which the lr drops, e.g. 30,50")
    g.add_argument("--lr-factors", type=_floats, help="lr multipliers after each milestone, e.g. 0.5,0.1")
    g.add_argument("--adv-lr", type=float, help="WAE-GAN discriminator lr (default 5e-4)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--fid-samples", type=int, help="prior samples for FID-LeNet/KID (default 2000)")
    g.add_argument("--fid-classifier-epochs", type=int)
    g.add_argument("--eval-every", type=int, help="held-out metrics and grids every N epochs (0: only at the end)")
    g.add_argument("--inception-weights", help="local FID Inception-v3 weights: adds real FID (needs torchmetrics)")
    g.add_argument("--cache-dir", help="cache of the FID-LeNet classifier (default $WAE_FAST_CACHE or ~/.cache/wae_fast)")
    g.add_argument("--no-final-eval", action="store_true", help="skip the final sample-quality evaluation")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--no-plots", action="store_true")
    return p


CONFIG_OPTIONS = ("dataset", "data_dir", "data_seed", "n_test", "max_images", "arch", "d_z", "sigma_z2", "lam", "mmd_scales",
                  "mmd_backend", "disc_width", "disc_layers", "vae_sigma_g2", "recon_factor", "pretrain_steps",
                  "epochs", "batch_size", "lr", "lr_milestones", "lr_factors", "adv_lr", "fid_samples",
                  "fid_classifier_epochs", "eval_every", "inception_weights", "cache_dir", "seed", "device",
                  "threads")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from .evaluate import main as evaluate_main
        return evaluate_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .trainer import NonFiniteLossError, Trainer

    options = {k: getattr(args, k) for k in CONFIG_OPTIONS}
    if args.official_extras:
        for key, value in (("recon_factor", 0.05), ("mmd_scales", MMD_SCALE_NAMES["official"]),
                           ("pretrain_steps", 200)):
            options[key] = value if options[key] is None else options[key]
    kwargs = dict(progress=not args.no_progress, plots=not args.no_plots, final_eval=not args.no_final_eval)
    try:
        if args.resume is not None:
            run_dir = Path(args.out) if args.resume is True and args.out else None
            if args.resume is not True:
                run_dir = Path(args.resume)
            if run_dir is None:
                seed = args.seed if args.seed is not None else 0
                run_dir = Path("runs") / f"{args.model}-{args.preset}-seed{seed}"
            explicit = {k: v for k, v in options.items() if v is not None}
            trainer = Trainer.from_checkpoint(run_dir, explicit, **kwargs)
            print(f"resuming {run_dir} at epoch {trainer.epoch} (step {trainer.step}) of {trainer.cfg.epochs}")
            if trainer.epoch >= trainer.cfg.epochs:
                if not (trainer.out / "final_metrics.json").exists() and trainer.final_eval:
                    trainer.finish()
                else:
                    print("nothing to do: the run has finished (pass a larger --epochs to continue)")
                return 0
        else:
            cfg = make_config(args.preset, args.model, **options)
            out = Path(args.out) if args.out else Path("runs") / f"{cfg.model}-{cfg.preset}-seed{cfg.seed}"
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
