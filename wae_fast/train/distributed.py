"""Data-parallel training under torchrun: the process group, each rank's share of the global batch,
batch-norm over the global batch, DDP, and the few collective decisions of the loop.

    torchrun --standalone --nproc_per_node 2 -m wae_fast.train --model wae-mmd --batch-size 100

W processes train one model. What makes W ranks × B/W rows take the same steps as one process × B rows
(to float rounding; tests/test_distributed_train.py checks the parameters after a few steps):

* The global batch. ``--batch-size`` is the global batch B (a multiple of W). Every rank holds the same
  data-order and noise generators (same seed) and draws the global batch's indices and its B prior
  samples (and the VAE's B noise vectors) exactly as one process would; rank r keeps rows
  [r·B/W, (r+1)·B/W). Concatenated in rank order, the ranks' shares are the single-process batch. (This
  replaces DistributedSampler, which would shard a differently ordered permutation.)
* The MMD. ``wae_fast.distributed.imq_mmd`` gives every rank MMD² of the global batch and, in backward,
  exactly its rows of the gradient; DDP then *averages* the W ranks' parameter gradients, so the MMD term
  enters the loss through ``wae_fast.distributed.scale_gradient_for_ddp`` (same value, gradient × W): the
  average becomes the gradient of recon_global + λ·MMD²_global. The per-rank means (reconstruction, the
  WAE-GAN and VAE losses) need nothing: the average of equal shards' means is the global mean.
* Batch-norm. Under plain DDP each rank normalises by its own B/W rows' statistics, which are not the
  global batch's, so every BatchNorm of the encoder and decoder is converted (``convert_batchnorm``): to
  torch's SyncBatchNorm on CUDA and, since SyncBatchNorm refuses CPU tensors (and DDP refuses it in a CPU
  module), to ``CpuSyncBatchNorm``, the same statistics over the global batch by differentiable
  all-reduces (gloo), on a process group of their own. Their backward sums the upstream gradients over
  ranks, so the converted networks' gradients are those of the global batch.
* DDP. The encoder, decoder and discriminator are wrapped in DistributedDataParallel without buffer
  synchronisation in forward (the global batch-norm keeps the running statistics equal on every rank,
  and rank 0's evaluation forwards must not start collectives). The discriminator's frozen forward in
  the WAE-GAN encoder step runs under ``no_sync`` (its parameters receive no gradient there).
* Collective decisions. The non-finite check, the pre-training stop and the MMD backend fallback are
  agreed by all-reduce, so that every rank raises, stops or falls back together and none is left
  waiting in a collective.
* Rank 0 alone evaluates, draws, writes metrics, logs and writes the atomic checkpoints; the other ranks
  carry on training (and wait for it at their next collective). A checkpoint holds the single-process
  state (plain modules' state dicts), so a run can be resumed under torchrun with any W that divides the
  batch, or in one process, with --resume.
"""
from __future__ import annotations

import gc
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistributedRun:
    """This process's place in a data-parallel run."""
    rank: int
    world_size: int
    local_rank: int
    stats_group: object = None  # the process group of the batch-norm statistics

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, rows: int) -> slice:
        """This rank's rows of a global batch of ``rows`` (a multiple of world_size)."""
        local = rows // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)

    def device(self, option: str) -> torch.device:
        """The training device for --device ``option``: this rank's GPU (cuda:LOCAL_RANK) for 'auto' on a
        CUDA machine and for any 'cuda…', else the CPU."""
        wants_cuda = option.startswith("cuda") or (option == "auto" and torch.cuda.is_available())
        if not wants_cuda:
            return torch.device(option if option != "auto" else "cpu")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {option}: CUDA is not available on this machine (use --device cpu)")
        if self.local_rank >= torch.cuda.device_count():
            raise ValueError(f"--device {option}: this node's process {self.local_rank} has no GPU of its own "
                             f"({torch.cuda.device_count()} GPUs; NCCL needs one per process): start at most "
                             f"{torch.cuda.device_count()} processes per node, or use --device cpu")
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device


def launched_by_torchrun(environ=None) -> bool:
    """True when the environment says this process is one of several (torchrun's WORLD_SIZE > 1)."""
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE", "1")) > 1


def start(environ=None) -> DistributedRun:
    """Initialise the default process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): gloo for CPU tensors and, on a CUDA machine, NCCL for CUDA tensors."""
    environ = os.environ if environ is None else environ
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    run = DistributedRun(rank=dist.get_rank(), world_size=dist.get_world_size(),
                         local_rank=int(environ.get("LOCAL_RANK", "0")))
    run.stats_group = dist.new_group(list(range(run.world_size)))
    return run


def stop(run: DistributedRun | None = None) -> None:
    """Destroy the process groups, after every object that holds one (the run's batch-norm group, the
    DDP modules and batch-norm layers of a finished trainer, which reference cycles may keep alive) has
    been released: a group object that outlives destroy_process_group keeps gloo's threads running into
    the interpreter's exit, which then aborts ("terminate called without an active exception")."""
    if run is not None:
        run.stats_group = None
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------- batch-norm

class _SumOverRanks(torch.autograd.Function):
    """Σ over ranks of a tensor, the same on every rank; backward sums the gradients over ranks (each
    rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        total = tensor.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad = grad_total.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU tensors (torch's SyncBatchNorm refuses them, and DDP refuses it in a CPU
    module): in training, the mean and then the biased variance over every rank's rows, by two
    differentiable all-reduces over ``process_group``, summed in float64 as BatchNorm's CPU kernel
    accumulates. The running statistics are updated as BatchNorm's (the unbiased variance over the global
    count), so they stay equal on every rank. In evaluation mode, or in a group of one process, it is
    BatchNorm."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (rows, channels, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        syncing = self.training and dist.is_available() and dist.is_initialized()
        if not syncing or dist.get_world_size(self.process_group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        # Sums in float64, as BatchNorm's CPU kernel accumulates.
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64)  # [1] rows × pixels
        sums = torch.cat([input.sum(dims, dtype=torch.float64), count])  # [C + 1]
        totals = _SumOverRanks.apply(sums, self.process_group)  # [C + 1]
        global_count = float(totals[-1].detach())
        mean = totals[:-1] / global_count  # [C]
        centred = input - mean.to(input.dtype).view(shape)
        squares = centred.pow(2).sum(dims, dtype=torch.float64)  # [C]
        var = _SumOverRanks.apply(squares, self.process_group) / global_count  # [C] biased
        out = centred * torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var.detach() * (global_count / max(global_count - 1.0, 1.0))
                self.running_mean.mul_(1.0 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out


def convert_batchnorm(module: nn.Module, device: torch.device, group=None) -> nn.Module:
    """``module`` with every BatchNorm*d replaced by one whose training statistics are those of the global
    batch, holding the same parameters and running statistics: torch's SyncBatchNorm on CUDA, CpuSyncBatchNorm
    on the CPU (torch.nn.SyncBatchNorm.convert_sync_batchnorm, for either)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, group)
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        converted = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats, group)
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, convert_batchnorm(child, device, group))
    return converted


# ----------------------------------------------------------------------------------------- DDP

class DataParallel(DistributedDataParallel):
    """DistributedDataParallel that also passes the decoder's ``mean`` and ``activate`` through its own
    forward (DDP synchronises gradients only for forwards that go through the wrapper)."""

    def mean(self, z):
        return self.module.activate(self(z))

    def activate(self, logits):
        return self.module.activate(logits)


def wrap(module: nn.Module, device: torch.device) -> DataParallel:
    """DDP without buffer synchronisation in forward (see the module docstring)."""
    device_ids = [device.index] if device.type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    return DataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


# ----------------------------------------------------------------------------------------- decisions

def all_true(flags: torch.Tensor) -> torch.Tensor:
    """The element-wise AND of a boolean tensor over ranks (on the CPU)."""
    agreed = flags.to(device="cpu", dtype=torch.int32)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
    return agreed.bool()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a float tensor, returned on its device."""
    total = values.detach().to(device="cpu", dtype=torch.float64)
    dist.all_reduce(total)
    return (total / dist.get_world_size()).to(device=values.device, dtype=values.dtype)
