"""Launcher for the fused C++ kernels of the aggregated MMD tests (``wae_fast._C.mmd_agg_sums``, sources
csrc/cpu/mmd_agg_cpu.{h,cpp}).

    collection_sums(z, labels, kernels, bandwidths) -> (W [S, L], R [S, L], T [S], Q [S])

z: the pooled rows [N, d] (x then y); labels: uint8 [L, ⌈N/8⌉] (wae_fast.stats.permutation_labels);
kernels[s] ∈ {"imq", "rbf"} with one bandwidth b_s each. With K₀ˢ the kernel matrix of z under k_s,
zero diagonal, and u_ℓ the labels as a 0/1 vector:

    W_sℓ = u_ℓᵀK₀ˢu_ℓ,   R_sℓ = u_ℓᵀK₀ˢ1,   T_s = 1ᵀK₀ˢ1,   Q_s = Σ_{i≠j} (K₀ˢ)²_ij          (float64)

The kernels centre z on its mean (spec.centre), rescale it by 2^−E (spec.rescale_bounds, as
cpu.permutation_sums) and evaluate each pair i < j once: one squared distance
shared by the S kernels, then per kernel the permutation test's table look-up over all L labellings
(csrc/cpu/mmd_perm_cpu.cpp). Memory O(N·d) plus the labels plus O(S·L) for each of ≤ 64 result slots.
As cpu.permutation_sums: numpy views of CPU tensors, checked in C++, GIL released, ``threads`` threads
(default torch.get_num_threads()), a result independent of the thread count; float16/bfloat16 rows are
upcast.
"""
from __future__ import annotations

import torch

from .. import backends, spec
from . import cpu


def is_available(device=None) -> tuple[bool, str]:
    """(True, "") when wae_fast._C is importable, matches this version and has the collection kernels."""
    return cpu.is_available(device, "aggregate")


def collection_sums(z: torch.Tensor, labels: torch.Tensor, kernels, bandwidths, *, threads=None, isa=None):
    """(W [S, L], R [S, L], T [S], Q [S]) as float64 CPU tensors; see the module docstring. ``isa``
    runs a given compiled instruction-set path (for tests; wae_fast.build_info()["supported"])."""
    ok, reason = is_available(z.device)
    if not ok:
        raise RuntimeError(f"backend='cpu' cannot run the aggregated test: {reason}")
    module = cpu._require()
    kernels, bandwidths = tuple(kernels), [float(b) for b in bandwidths]
    for name in kernels:
        if name not in spec.KERNEL_IDS:
            raise ValueError(f"kernels must be in {tuple(spec.KERNEL_IDS)}, got {name!r}")
    if labels.dtype != torch.uint8 or labels.dim() != 2 or labels.device.type != "cpu":
        raise ValueError(f"labels must be a 2-D uint8 CPU tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)} on {labels.device}")
    z = cpu._as_kernel_input(z)
    labels = labels.contiguous()
    count = len(bandwidths)
    sums = backends.new_buffer((2 * count, labels.shape[0]), torch.float64, "cpu")
    totals = backends.new_buffer((2, count), torch.float64, "cpu")
    threads = torch.get_num_threads() if threads is None else int(threads)
    rescale = spec.rescale_bounds(spec.bandwidth_exponents(tuple(bandwidths)), z.shape[1],
                                  torch.float64 if z.dtype == torch.float64 else torch.float32)
    module.mmd_agg_sums(z.numpy(), labels.numpy(), kernels=[spec.KERNEL_IDS[k] for k in kernels],
                        bandwidths=bandwidths, sums=sums.numpy(), totals=totals.numpy(), rescale=list(rescale),
                        threads=max(1, threads), isa=isa)
    return sums[:count], sums[count:], totals[0], totals[1]
