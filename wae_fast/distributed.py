"""The exact MMD² of a batch sharded over processes (torch.distributed: gloo on CPU, NCCL on GPU).

    from wae_fast import distributed as wd
    v = wd.imq_mmd(x_local, y_local, c=None, *, scales=(1.0,), estimator="unbiased", backend="auto", group=None)
    v = wd.rbf_mmd(x_local, y_local, sigma2=None, *, scales=..., estimator=..., backend=..., group=None)
    v = wd.mmd(x_local, y_local, kernel="imq", *, c=None, sigma2=None, ...)

Every rank of ``group`` (default: the default process group) calls the function with its own rows:
x_local [n_r, d] and y_local [m_r, d]. Shards may be uneven, may be empty on some ranks, and the x and y
shards may differ (a last short batch). With x = cat(x_local of ranks 0, 1, …) and y likewise (rank order):

    the value   is MMD²(x, y), the same float on every rank: equal to wae_fast.mmd(x, y, ...) to rounding
                (the pair sums are added in another order), not the mean of the ranks' own MMD²s (which
                is another, noisier statistic: the MMD of 4 shards of 25 is not the MMD of a batch of 100);
    v.backward() gives each rank exactly its own rows of ∂MMD²(x, y)/∂x (and of ∂/∂y when y_local requires
                grad): not W times them, not their average. Summed over ranks, the parameters' gradients
                are those of MMD²(x, y).

DDP: DistributedDataParallel *averages* the parameters' gradients over the W ranks. A loss term whose
gradient is already split exactly over the ranks, as this one, must therefore have its gradient multiplied
by W before the averaging: ``loss = recon_local + lam * wd.scale_gradient_for_ddp(v)`` (the value of v
is unchanged; its gradient is W times). Per-rank means such as a reconstruction cost need nothing: DDP's
average of equal-sized shards' means is the global mean. wae_fast.train does exactly this under torchrun.

How the work is split (``block_sums_and_grads`` of the fused backends, the "row range against all
columns" entry documented in wae_fast.backends). Each rank all-gathers the codes (all of x and y: memory
O((N + M)·d) per rank) and sweeps only a range of the rows against all columns, with the single-process
sweeps (spec.Sweep) and the weights of all N and M rows:

    x requires grad (on any rank)   rank r sweeps its own x rows: against every other x row (FULL, giving
                                    its ∂/∂x rows) and against every y row (the cross block's value and,
                                    for the gradient, its share of ∂/∂x)
    y requires grad                 rank r also sweeps its own y rows against every other y row and, for
                                    the gradient only, against every x row: the cross block is evaluated
                                    twice, once from each side, and its value counted once (from x's side)
    a set without gradient          its rows are split in W contiguous ranges of equal work (a TRIANGLE
                                    sweep, j > i, doubled; for x plus the cross block's value), whoever
                                    owns them

Each ordered pair (i, j) of a within block is counted by exactly one rank, each cross pair's value by
exactly one rank. The ranks' five block sums (float64) are all-gathered and added in rank order on every
rank, so the value is bitwise the same on every rank and from run to run. Work per rank ≈ 1/W of the
single-process call (with y requiring grad, the cross block costs twice its single-process share, as in
the single-process call); communication per call: an all-gather of 12 integers per rank (shard sizes,
d, dtypes, gradient flags, options, backend: checked before anything else; the one host synchronisation),
one all-gather of the codes (padded to the largest shard, stripped after) and one all-gather of 5 float64
per rank. Nothing is communicated in backward.

sigma2="median" is computed on the gathered x and y, identically on every rank (wae_fast.kernels.
median_sigma2). backend="reference" evaluates the dense reference on the gathered batch on every rank
(W times the work, O(N·M) memory: for testing).

Bad use raises, on every rank, before the codes are exchanged: an invalid local input (wrong rank, dtype,
device…) on one rank, d, dtype or device type differing between ranks, or the kernel, estimator, c/sigma2
or scales differing between ranks all raise a ValueError or TypeError naming the ranks and values (the
first, small all-gather carries them), so no rank is left waiting in a collective. The process group
stays usable afterwards. (A rank that does not call the function at all cannot be detected: the others
wait in the first all-gather until the group's timeout.) Outside an initialised process group the
functions raise a RuntimeError; in a group of one process they equal the single-process functions.

Eager mode only (no torch.compile, vmap or higher-order gradients).
"""
from __future__ import annotations

import zlib

import torch

from . import _dispatch, _problem, spec
from ._op import apply_eager
from ._problem import DTYPES as _DTYPES
from .reference import mmd_reference

__all__ = ["mmd", "imq_mmd", "rbf_mmd", "scale_gradient_for_ddp"]

# The metadata each rank contributes to the first all-gather (int64 slots).
_STATUS, _N, _M, _DX, _DY, _DTYPE_X, _DTYPE_Y, _DEVICE, _GRAD_X, _GRAD_Y, _OPTIONS, _BACKEND = range(12)
_META_SLOTS = 12
_DEVICE_TYPES = ("cpu", "cuda")


def _distributed():
    import torch.distributed as dist
    return dist


def _resolve_group(group):
    """(group, rank, world size); raises a RuntimeError outside an initialised process group."""
    dist = _distributed()
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "wae_fast.distributed needs an initialised torch.distributed process group: call "
            "torch.distributed.init_process_group (torchrun sets the environment it reads) before, or use "
            "wae_fast.mmd / imq_mmd / rbf_mmd for a batch held by one process")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("wae_fast.distributed: this process is not a member of the given group")
    return group, rank, dist.get_world_size(group)


def _comm_device(group, device: torch.device | None) -> torch.device:
    """Where this group's collectives take their tensors: CPU for gloo, the codes' GPU for NCCL."""
    backend = str(_distributed().get_backend(group)).lower()
    if backend == "gloo":
        return torch.device("cpu")
    if backend == "nccl":
        if device is not None and device.type == "cuda":
            return device
        return torch.device("cuda", torch.cuda.current_device())
    return device if device is not None else torch.device("cpu")


def _all_gather_rows(group, local: torch.Tensor, world: int) -> torch.Tensor:
    """[world, *local.shape]: every rank's ``local`` (same shape on every rank), in rank order."""
    dist = _distributed()
    shape = tuple(local.shape)
    out = local.new_empty((world * shape[0],) + shape[1:])  # the concatenation form: every backend takes it
    gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather_single(out, local.contiguous(), group=group)
    return out.view((world,) + shape)


def _check_local(x, y) -> None:
    """Raise when this rank's inputs cannot take part (the error is then reported to every rank)."""
    for name, t in (("x_local", x), ("y_local", y)):
        _problem.check_tensor(name, t, allow_empty_rows=True)
        if t.device.type not in _DEVICE_TYPES:
            raise ValueError(f"{name} must be on a CPU or CUDA device, got {t.device}")
    if x.device != y.device:
        raise ValueError(f"x_local and y_local must be on the same device, got {x.device} and {y.device}")


def _options_code(kernel, estimator, parameter, scales) -> int:
    """A checksum of the options that must agree between ranks (the backend may differ)."""
    text = repr((kernel, estimator, parameter, tuple(float(s) for s in scales)))
    return zlib.crc32(text.encode())


def _metadata(x, y, want_x: bool, want_y: bool, problem: bool, options: int, backend: str | None
              ) -> torch.Tensor:
    """This rank's slots of the first all-gather (only status and options when it has a problem)."""
    meta = torch.zeros(_META_SLOTS, dtype=torch.int64)
    meta[_STATUS] = 1 if problem else 0
    meta[_OPTIONS] = options
    if problem:
        return meta
    meta[_BACKEND] = _dispatch.BACKENDS.index(backend)
    meta[_N], meta[_M] = x.shape[0], y.shape[0]
    meta[_DX], meta[_DY] = x.shape[1], y.shape[1]
    meta[_DTYPE_X], meta[_DTYPE_Y] = _DTYPES.index(x.dtype), _DTYPES.index(y.dtype)
    meta[_DEVICE] = _DEVICE_TYPES.index(x.device.type)
    meta[_GRAD_X], meta[_GRAD_Y] = int(want_x), int(want_y)
    return meta


def _check_metadata(meta: torch.Tensor, rank: int, problem: Exception | None, estimator: str) -> None:
    """Raise, on every rank, when any rank's arguments are invalid or the ranks disagree."""
    bad = [r for r in range(meta.shape[0]) if meta[r, _STATUS]]
    if bad:
        if problem is not None:  # this rank's own error, its type kept, naming the other ranks too
            raise type(problem)(f"wae_fast.distributed: invalid arguments on rank(s) {bad}; on this rank "
                                f"({rank}): {problem}") from problem
        raise ValueError(f"wae_fast.distributed: invalid arguments on rank(s) {bad} (their processes say "
                         f"why; this rank, {rank}, is fine)")
    ranks = list(range(meta.shape[0]))

    def per_rank(slot):
        return [int(v) for v in meta[:, slot]]

    d_x, d_y = per_rank(_DX), per_rank(_DY)
    if len(set(d_x + d_y)) != 1:
        raise ValueError(f"wae_fast.distributed: x_local and y_local must have the same number of features d "
                         f"on every rank, got d = {d_x} (x_local) and {d_y} (y_local) on ranks {ranks}")
    dtypes_x, dtypes_y = per_rank(_DTYPE_X), per_rank(_DTYPE_Y)
    if len(set(dtypes_x + dtypes_y)) != 1:
        names = lambda codes: [str(_DTYPES[c]).replace("torch.", "") for c in codes]  # noqa: E731
        raise TypeError(f"wae_fast.distributed: x_local and y_local must have the same dtype on every rank, "
                        f"got {names(dtypes_x)} (x_local) and {names(dtypes_y)} (y_local) on ranks {ranks}")
    devices = per_rank(_DEVICE)
    if len(set(devices)) != 1:
        raise ValueError(f"wae_fast.distributed: every rank's inputs must be on the same device type, got "
                         f"{[_DEVICE_TYPES[c] for c in devices]} on ranks {ranks}")
    if len(set(per_rank(_OPTIONS))) != 1:
        raise ValueError("wae_fast.distributed: kernel, estimator, c / sigma2 and scales must be the same on "
                         f"every rank; the options' checksums differ: {per_rank(_OPTIONS)} on ranks {ranks}")
    backends = per_rank(_BACKEND)
    if len(set(backends)) != 1:
        raise ValueError("wae_fast.distributed: every rank must run the same backend, got "
                         f"{[_dispatch.BACKENDS[c] for c in backends]} on ranks {ranks} (pass backend= explicitly)")
    n, m = sum(per_rank(_N)), sum(per_rank(_M))
    least = 2 if estimator == "unbiased" else 1
    if n < least or m < least:
        extra = " (use estimator='biased')" if estimator == "unbiased" else ""
        raise ValueError(f"wae_fast.distributed: the {estimator} estimator needs at least {least} rows of x and "
                         f"of y over all ranks, got {n} and {m} (x_local rows {per_rank(_N)}, y_local rows "
                         f"{per_rank(_M)} on ranks {ranks}){extra}")


def _gather_codes(group, x, y, meta, world, comm):
    """(x, y): every rank's rows in rank order, on x_local's device, exactly as sent (bitwise)."""
    n_r, m_r = [int(v) for v in meta[:, _N]], [int(v) for v in meta[:, _M]]
    rows = [a + b for a, b in zip(n_r, m_r)]
    d, itemsize = x.shape[1], x.element_size()

    def as_bytes(t):  # [rows, d] → [rows, d·itemsize] uint8, a view when t is contiguous
        return t.detach().contiguous().view(torch.uint8).reshape(t.shape[0], d * itemsize)

    # Bytes, so that every dtype travels bit for bit on every backend; this rank's x rows, then its y rows.
    padded = torch.zeros(max(rows), d * itemsize, dtype=torch.uint8, device=comm)  # [max rows, d·bytes]
    padded[:x.shape[0]] = as_bytes(x).to(comm)
    padded[x.shape[0]:x.shape[0] + y.shape[0]] = as_bytes(y).to(comm)
    gathered = _all_gather_rows(group, padded, world)  # [W, max rows, d·bytes]
    del padded
    xs, ys = [], []
    for r in range(world):
        block = gathered[r, :rows[r]].view(x.dtype)  # [n_r + m_r, d] a view
        xs.append(block[:n_r[r]])
        ys.append(block[n_r[r]:])
    return torch.cat(xs).to(x.device), torch.cat(ys).to(x.device)


def _balanced_range(count: int, extra: int, rank: int, world: int) -> tuple[int, int]:
    """Rank's contiguous range of ``count`` rows when row i costs (count − 1 − i) + extra pairs (a
    triangle sweep and ``extra`` columns more): boundaries at equal fractions of the total cost."""
    def cost_before(i):  # Σ_{k < i} (count − 1 − k + extra), exact in float64 for any realistic count
        return i * (count - 1 + extra) - i * (i - 1) / 2

    total = cost_before(count)

    def boundary(r):
        if r >= world:
            return count
        target = total * r / world
        lo, hi = 0, count  # smallest i with cost_before(i) >= target
        while lo < hi:
            mid = (lo + hi) // 2
            if cost_before(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    return boundary(rank), boundary(rank + 1)


def _row_ranges(meta, rank, world, need_x, need_y):
    """(x rows, y rows) this rank sweeps: its own rows of a set whose gradient is wanted, else an equal
    share of the work."""
    n_r, m_r = [int(v) for v in meta[:, _N]], [int(v) for v in meta[:, _M]]
    n, m = sum(n_r), sum(m_r)
    # without ∂/∂x, the triangle of x and the cross block's value split evenly
    x_rows = (sum(n_r[:rank]), sum(n_r[:rank + 1])) if need_x else _balanced_range(n, m, rank, world)
    y_rows = (sum(m_r[:rank]), sum(m_r[:rank + 1])) if need_y else _balanced_range(m, 0, rank, world)
    return x_rows, y_rows


def _reference_share(x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_x, need_y):
    """The dense reference on the gathered batch: (value, this rank's gradient rows)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(need_x)
        yg = y.detach().requires_grad_(need_y)
        value = mmd_reference(xg, yg, kernel, bandwidths, unbiased)
        wanted = [t for t in (xg, yg) if t.requires_grad]
        grads = list(torch.autograd.grad(value, wanted)) if wanted else []
    grad_x = grads.pop(0)[x_rows[0]:x_rows[1]] if need_x else None
    grad_y = grads.pop(0)[y_rows[0]:y_rows[1]] if need_y else None
    return value.detach(), grad_x, grad_y


def _global_value_and_grads(x_local, y_local, want_x, want_y, kernel, c, sigma2, scales, estimator, backend,
                            group):
    """(MMD² of the gathered batch [0-dim, x_local's dtype], this rank's rows of ∂/∂x | None, of ∂/∂y
    | None), the gradients in x_local's dtype. want_x / want_y: this rank's inputs will receive a
    gradient; a gradient is computed when any rank wants it."""
    group, rank, world = _resolve_group(group)
    # Every check that one rank could fail alone is made before the first collective and reported
    # through it, so that all ranks raise together.
    problem, parameter, chosen = None, None, None
    try:
        _problem.check_choices(kernel, estimator, backend)
        scales = _problem.check_scales(scales)
        parameter = _problem.check_kernel_parameter(kernel, c, sigma2)
        _check_local(x_local, y_local)
        chosen = _dispatch.select_backend(backend, x_local.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        problem = exc
    device = x_local.device if isinstance(x_local, torch.Tensor) else None
    comm = _comm_device(group, device)
    options = _options_code(kernel, estimator, parameter, scales) if problem is None else 0
    meta = _metadata(x_local, y_local, want_x, want_y, problem is not None, options, chosen)
    meta = _all_gather_rows(group, meta.to(comm), world).cpu()  # [W, slots]
    _check_metadata(meta, rank, problem, estimator)
    need_x, need_y = bool(meta[:, _GRAD_X].any()), bool(meta[:, _GRAD_Y].any())

    x, y = _gather_codes(group, x_local, y_local, meta, world, comm)  # [N, d], [M, d]
    # The same data and code on every rank: the same bandwidths (sigma2="median" of the gathered batch).
    opts = _problem.Options(kernel, spec.KERNEL_IDS[kernel], parameter, scales, estimator == "unbiased", chosen, None)
    if parameter != "median":
        base = 2.0 * x.shape[1] if parameter is None else parameter
        opts = opts._replace(bandwidths=_problem.check_bandwidths(kernel, parameter, base, scales, x.dtype))
    bandwidths = _problem.bandwidths_for(opts, x, y)
    unbiased = opts.unbiased
    x_rows, y_rows = _row_ranges(meta, rank, world, need_x, need_y)

    if chosen == "reference":
        value, grad_x, grad_y = _reference_share(x, y, kernel, bandwidths, unbiased, x_rows, y_rows,
                                                 need_x, need_y)
        return value.to(x_local.dtype), grad_x, grad_y

    problem = _problem.Problem(x.contiguous(), y.contiguous(), kernel, opts.kernel_id, bandwidths, unbiased, need_x,
                               need_y, chosen)
    result = _dispatch.engine(chosen).mmd(problem, x_rows, y_rows, want_sums=True)
    sums = torch.as_tensor(result.sums, dtype=torch.float64).to(comm)
    every_sum = _all_gather_rows(group, sums, world)  # [W, 5]
    total = every_sum[0].clone()  # [5], on the device: no host synchronisation
    for r in range(1, world):  # rank order: the same float on every rank and in every run
        total += every_sum[r]
    value = spec.assemble(total, spec.estimator_weights(x.shape[0], y.shape[0], unbiased))
    value = value.to(device=x_local.device, dtype=x_local.dtype)
    grad_x = None if result.grad_x is None else result.grad_x.to(x_local.dtype)
    grad_y = None if result.grad_y is None else result.grad_y.to(y_local.dtype)
    return value, grad_x, grad_y


def mmd(x_local: torch.Tensor, y_local: torch.Tensor, kernel: str = "imq", *, c=None, sigma2=None,
        scales=(1.0,), estimator: str = "unbiased", backend: str = "auto", group=None) -> torch.Tensor:
    """MMD² of the rows of every rank of ``group`` (x = cat of the ranks' x_local in rank order, y
    likewise), the same on every rank; backward gives this rank its rows of the gradient. Options as in
    wae_fast.mmd; see the module docstring for the contract, DDP and the cost."""
    options = (kernel, c, sigma2, scales, estimator, backend, group)
    if not isinstance(x_local, torch.Tensor) or not isinstance(y_local, torch.Tensor):
        return _global_value_and_grads(x_local, y_local, False, False, *options)[0]  # raises on every rank
    # Asked here: inside the autograd function's forward, grad mode is off.
    grad_mode = torch.is_grad_enabled()
    arguments = (x_local, y_local, grad_mode and x_local.requires_grad, grad_mode and y_local.requires_grad) + options
    return apply_eager(x_local, y_local, _global_share, arguments)


def _global_share(arguments):
    """(value, this rank's ∂/∂x rows | None, ∂/∂y rows | None): the backward hands each rank its own rows of
    the gradient (computed in the forward sweep), scaled by the upstream gradient; nothing is communicated
    in backward."""
    return _global_value_and_grads(*arguments)


def imq_mmd(x_local: torch.Tensor, y_local: torch.Tensor, c=None, *, scales=(1.0,),
            estimator: str = "unbiased", backend: str = "auto", group=None) -> torch.Tensor:
    """The global MMD² with the inverse multiquadratics kernel (see wae_fast.imq_mmd and ``mmd``)."""
    return mmd(x_local, y_local, "imq", c=c, scales=scales, estimator=estimator, backend=backend, group=group)


def rbf_mmd(x_local: torch.Tensor, y_local: torch.Tensor, sigma2=None, *, scales=(1.0,),
            estimator: str = "unbiased", backend: str = "auto", group=None) -> torch.Tensor:
    """The global MMD² with the Gaussian kernel (see wae_fast.rbf_mmd and ``mmd``); sigma2="median" is
    the median heuristic of the gathered batch, the same on every rank."""
    return mmd(x_local, y_local, "rbf", sigma2=sigma2, scales=scales, estimator=estimator, backend=backend,
               group=group)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, factor):
        ctx.factor = factor
        return value.clone()

    @staticmethod
    def backward(ctx, grad_value):
        return grad_value * ctx.factor, None


def scale_gradient_for_ddp(value: torch.Tensor, group=None) -> torch.Tensor:
    """``value`` unchanged, with its gradient multiplied by the group's size W.

    For a DDP loss: DistributedDataParallel averages the parameters' gradients over the W ranks, which
    is right for per-rank means but divides by W a term whose gradient each rank already holds exactly
    its share of (this module's MMD²). ``loss = recon + lam * scale_gradient_for_ddp(v)`` makes DDP's
    average the gradient of recon_global + lam·MMD²(global batch)."""
    _, _, world = _resolve_group(group)
    return _ScaleGradient.apply(value, float(world))
