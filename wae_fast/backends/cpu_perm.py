"""Launcher for the fused C++ kernels of the MMD permutation test (``wae_fast._C.mmd_perm_sums``, sources
csrc/cpu/mmd_perm_cpu.{h,cpp}).

    permutation_sums(z, labels, kernel, bandwidths) -> (within [L], member_rows [L], total [])

z: the pooled rows [N, d] (x then y); labels: uint8 [L, ⌈N/8⌉], bit i % 8 (least significant first) of
byte i // 8 of row p set when pooled row i is an "x" row of labelling p (wae_fast.stats.permutation_labels).
With K₀ the kernel matrix of z, zero diagonal:

    within[p] = u_pᵀ K₀ u_p,    member_rows[p] = u_pᵀ K₀ 1,    total = 1ᵀ K₀ 1        (float64)

The kernels centre z on its mean (spec.centre), evaluate every pair i < j once and apply it to all L
labellings by table look-up (a 4-column group's 16 subset sums, indexed by the labels' nibbles), so
memory is O(N·d) plus the labels plus O(L) per task of 128 rows; see mmd_perm_cpu.cpp. Like the MMD
launcher (backends/cpu.py), it hands numpy views of CPU tensors to the extension, which checks them
in C++, releases the GIL and runs on ``threads`` threads (default torch.get_num_threads()); the result
does not depend on the thread count. float16/bfloat16 rows are upcast to float32.
"""
from __future__ import annotations

import torch

from .. import backends, spec
from . import cpu


def is_available(device=None) -> tuple[bool, str]:
    """(True, "") when wae_fast._C is importable, matches this version and has the permutation kernels."""
    ok, reason = cpu.is_available(device)
    if not ok:
        return ok, reason
    module, _ = cpu._load()
    if not hasattr(module, "mmd_perm_sums"):
        return False, ("the C++ extension wae_fast._C predates the permutation test (no mmd_perm_sums); "
                       f"rebuild: {cpu._BUILD_HINT}")
    return True, ""


def permutation_sums(z: torch.Tensor, labels: torch.Tensor, kernel: str, bandwidths, *, threads=None,
                     isa=None):
    """(within [L], member_rows [L], total []) as float64 CPU tensors; see the module docstring. ``isa``
    runs a given compiled instruction-set path (for tests; wae_fast.build_info()["supported"])."""
    ok, reason = is_available(z.device)
    if not ok:
        raise RuntimeError(f"backend='cpu' cannot run the permutation test: {reason}")
    module = cpu._require()
    if kernel not in spec.KERNEL_IDS:
        raise ValueError(f"kernel must be one of {tuple(spec.KERNEL_IDS)}, got {kernel!r}")
    if labels.dtype != torch.uint8 or labels.dim() != 2 or labels.device.type != "cpu":
        raise ValueError(f"labels must be a 2-D uint8 CPU tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)} on {labels.device}")
    z = z.detach()
    if z.dtype not in (torch.float32, torch.float64):
        z = z.to(torch.float32)
    z = z.contiguous()
    labels = labels.contiguous()
    sums = backends.new_buffer((2, labels.shape[0]), torch.float64, "cpu")
    threads = torch.get_num_threads() if threads is None else int(threads)
    total = module.mmd_perm_sums(z.numpy(), labels.numpy(), kernel=spec.KERNEL_IDS[kernel],
                                 bandwidths=[float(b) for b in bandwidths], sums=sums.numpy(),
                                 threads=max(1, threads), isa=isa)
    return sums[0], sums[1], torch.tensor(total, dtype=torch.float64)
