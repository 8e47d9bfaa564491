"""Training throughput of --preset paper-celeba on synthetic 64×64 RGB images (no CelebA is available
here): images per second of WAE-MMD (and WAE-GAN) against the VAE, the same architecture and batch.

    python scripts/celeba_throughput.py --steps 300 --out gpu_results/celeba_throughput.json
    python scripts/celeba_throughput.py --device cpu --steps 2 --dry-run     # tiny, on the CPU (tests)

Throughput only: the images are random blobs (wae_fast.train.data.synthetic_dataset), so nothing here
says anything about sample quality. One warm-up epoch of a few steps per model, then one timed epoch of
``--steps`` batches of 100. Writes a JSON list of rows (model, images_per_s, steps, device) atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model (default 300)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--models", default="wae-mmd,vae,wae-gan")
    parser.add_argument("--dry-run", action="store_true", help="the tiny architecture, batch 10 (CPU tests)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    sys.path.insert(0, str(ROOT))
    import torch

    from wae_fast.train import make_config
    from wae_fast.train.atomic import atomic_write_json
    from wae_fast.train.data import synthetic_dataset
    from wae_fast.train.trainer import Trainer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu)")
    batch = 10 if args.dry_run else 100
    shape = (1, 28, 28) if args.dry_run else (3, 64, 64)
    rows = []
    for model in args.models.split(","):
        overrides = dict(device=args.device, epochs=2, eval_every=0, checkpoint_every=0, final_eval=False,
                         batch_size=batch)
        preset = "small" if args.dry_run else "paper-celeba"
        if args.dry_run:
            overrides.update(arch="tiny", d_z=4, disc_width=16)
        cfg = make_config(preset, model, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            warm = Trainer(cfg, tmp, synthetic_dataset(batch * 3, batch, shape=shape), plots=False, progress=False)
            warm.train_epoch()
            trainer = Trainer(cfg, tmp, synthetic_dataset(batch * args.steps, batch, shape=shape), plots=False,
                              progress=False)
            start = time.perf_counter()
            row = trainer.train_epoch()
            seconds = time.perf_counter() - start
        rows.append(dict(model=model, preset=preset, synthetic=True, steps=args.steps, batch=batch,
                         images_per_s=batch * args.steps / seconds, epoch_images_per_s=row.get("train_images_per_s"),
                         device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                         mmd_backend=trainer.mmd_backend))
        print(json.dumps(rows[-1]), flush=True)
    vae = next((r["images_per_s"] for r in rows if r["model"] == "vae"), None)
    for row in rows:
        if vae:
            row["vs_vae"] = row["images_per_s"] / vae
    if args.out:
        atomic_write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
