"""PNG grids and loss curves. matplotlib is imported lazily (only when a figure is drawn)."""
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


PANELS = (("train_loss", "train loss"), ("test_recon", "test reconstruction ‖x − G(Q(x))‖²"),
          ("test_mmd", "test MMD²(Q_Z, P_Z)"), ("lr", "learning rate"))


def loss_curves(path, history: list[dict], title: str = "") -> Path:
    """Loss terms, held-out reconstruction and MMD, and learning rate against epochs."""
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
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker=".")
        ax.set_title(label, fontsize=9)
    if any("test_mmd_p" in h for h in history):  # the permutation test of held-out codes vs prior samples
        twin = axes[2].twinx()
        p_values = [h.get("test_mmd_p", np.nan) for h in history]
        twin.plot(epochs, p_values, color="tab:red", marker="x", lw=0.8)
        twin.axhline(0.05, color="tab:red", ls=":", lw=0.8)
        twin.set_yscale("log")
        twin.set_ylim(min(1e-3, 0.5 * np.nanmin(p_values)), 1.5)
        twin.set_ylabel("p-value, codes vs prior (0.05 dotted)", color="tab:red", fontsize=8)
        axes[2].set_title("test MMD²(Q_Z, P_Z) and its permutation-test p-value", fontsize=9)
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
