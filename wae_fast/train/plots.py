"""A run's pictures: image grids (reconstructions, prior samples, interpolations) and loss curves.
matplotlib is imported lazily (only when a figure is drawn)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib (or run with --no-plots)") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def to_unit(images: torch.Tensor, value_range=(0.0, 1.0)) -> torch.Tensor:
    lo, hi = value_range
    return ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)


def grid(images: torch.Tensor, ncols: int, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [0, 1] → an H×W(×3) array with ``ncols`` images per row and white padding."""
    n, c, h, w = images.shape
    nrows = -(-n // ncols)
    canvas = np.ones((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = \
            images[i].numpy()
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def save_grid(path, images: torch.Tensor, ncols: int) -> Path:
    """Save a grid PNG (atomically)."""
    import io

    from .atomic import atomic_write_bytes
    plt = _pyplot()
    array = grid(images, ncols)
    buffer = io.BytesIO()
    plt.imsave(buffer, array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def interleave_rows(real: torch.Tensor, recon: torch.Tensor, ncols: int) -> torch.Tensor:
    """Rows of real images alternating with rows of their reconstructions (Figures 2–3 of the paper)."""
    rows = []
    for i in range(0, real.shape[0], ncols):
        rows += [real[i:i + ncols], recon[i:i + ncols]]
    return torch.cat(rows)


DECODE_BATCH = 500


@torch.no_grad()
def decode_prior(trainer, n: int, seed: int) -> torch.Tensor:
    """n decoded prior samples (the decoder's mean) of a Trainer, in [0, 1], on the CPU."""
    with trainer.eval_mode():
        gen = torch.Generator(device=trainer.device).manual_seed(seed)
        out = [trainer.unit_images(trainer.decoder.mean(trainer.prior(min(DECODE_BATCH, n - i), gen)))
               for i in range(0, n, DECODE_BATCH)]
    return torch.cat(out)


@torch.no_grad()
def draw_run(trainer) -> None:
    """reconstructions.png, samples.png and interpolations.png of a Trainer in its run folder: the same
    test images and noise every time; an interpolation decodes (1 − t)·Q(a) + t·Q(b) at 10 values of t."""
    out, data, test_x, encode = trainer.out, trainer.data, trainer.test_x, trainer.encode
    with trainer.eval_mode():
        n_test = test_x.shape[0]
        x = data.to_float(test_x[:min(50, n_test)])
        _, mu, _ = encode(x, None)
        save_grid(out / "reconstructions.png",
                  interleave_rows(trainer.unit_images(x), trainer.unit_images(trainer.decoder.mean(mu)), 10), 10)
        save_grid(out / "samples.png", decode_prior(trainer, 100, trainer.cfg.seed + 20_000), 10)
        pairs = torch.randperm(n_test, generator=torch.Generator().manual_seed(trainer.cfg.seed + 30_000))
        n_pairs = min(8, n_test // 2)
        a = data.to_float(test_x[pairs[:n_pairs].to(trainer.device)])
        b = data.to_float(test_x[pairs[n_pairs:2 * n_pairs].to(trainer.device)])
        _, za, _ = encode(a, None)
        _, zb, _ = encode(b, None)
        t = torch.linspace(0, 1, 10, device=trainer.device).view(1, -1, 1)
        z = (za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t).reshape(-1, za.shape[1])
        steps = trainer.unit_images(trainer.decoder.mean(z)).view(n_pairs, 10, *x.shape[1:])
        rows = torch.cat([trainer.unit_images(a).unsqueeze(1), steps, trainer.unit_images(b).unsqueeze(1)], dim=1)
        save_grid(out / "interpolations.png", rows.flatten(0, 1), 12)


PANELS = (("train_loss", "train loss"), ("test_recon", "test reconstruction ‖x − G(Q(x))‖²"),
          ("test_mmd", "test MMD²(Q_Z, P_Z)"), ("lr", "learning rate"))


def loss_curves(path, history: list[dict], title: str = "") -> Path:
    """Loss terms, held-out reconstruction, held-out MMD² with its permutation null's 95 % quantile, and
    learning rate against epochs."""
    import io

    from .atomic import atomic_write_bytes
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    epochs = [h["epoch"] for h in history]
    train_keys = [k for k in ("train_loss", "train_recon", "train_mmd", "train_gan", "train_kl", "train_d_loss")
                  if any(k in h for h in history)]
    for key in train_keys:
        axes[0].plot(epochs, [h.get(key, np.nan) for h in history], label=key[6:])
    axes[0].set_yscale("symlog", linthresh=1e-2)
    axes[0].set_title("training terms (epoch means)")
    axes[0].legend(fontsize=7)
    for ax, (key, label) in zip(axes[1:], PANELS[1:]):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=key)
        ax.set_title(label, fontsize=9)
    if any("test_mmd_null_q95" in h for h in history):  # the permutation test of the codes vs the prior
        quantiles = [h.get("test_mmd_null_q95", np.nan) for h in history]
        axes[2].plot(epochs, quantiles, color="tab:gray", ls="--", lw=1, label="null's 95 % quantile")
        axes[2].legend(fontsize=7)
        axes[2].set_yscale("symlog", linthresh=max(1e-6, float(np.nanmin(np.abs(quantiles)))))
        axes[2].set_title("test MMD²(Q_Z, P_Z); above the dashed line the permutation test tells the codes\n"
                          "from prior samples at the 5 % level", fontsize=8)
    axes[3].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
