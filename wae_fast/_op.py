"""The one custom autograd of wae_fast, and the torch custom op that carries it through torch.compile.

A fused backend returns the statistic *and* its gradients in one sweep over the pairs (MMD² is a
scalar loss, so its input gradients are known in the forward). The backward only scales them:

    ∂L/∂x = grad_output · ∂MMD²/∂x,    ∂L/∂y = grad_output · ∂MMD²/∂y

``MMDFunction`` is that autograd. In eager mode its forward calls the backend directly. Under
torch.compile it calls ``torch.ops.wae_fast.mmd_fused`` instead: a custom op (with a fake
implementation for shapes) that the graph keeps as one opaque node, so a model that calls wae_fast
compiles without a graph break. (Eager calls skip the op: its first call in a process pulls in
torch._dynamo and sympy, ~150 MB of memory and a little latency per call.)

Double backward is not supported by the fused backends: backward raises under create_graph=True;
the "reference" backend (plain autograd) supports it.
"""
from __future__ import annotations

import torch

from ._dispatch import fused_mmd_and_grads


def _fused_value_and_grads(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
    """(MMD², ∂MMD²/∂x or an empty tensor, ∂MMD²/∂y or an empty tensor), all in the input dtype."""
    value, grad_x, grad_y = fused_mmd_and_grads(
        backend, x.contiguous(), y.contiguous(), kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
    value = value.to(x.dtype)
    grad_x = grad_x.to(x.dtype) if need_grad_x else x.new_empty(0)
    grad_y = grad_y.to(y.dtype) if need_grad_y else y.new_empty(0)
    return value, grad_x, grad_y


@torch.library.custom_op("wae_fast::mmd_fused", mutates_args=())
def mmd_fused(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: list[float], unbiased: bool,
              backend: str, need_grad_x: bool, need_grad_y: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MMD², ∂MMD²/∂x or an empty tensor, ∂MMD²/∂y or an empty tensor), all in the input dtype."""
    return _fused_value_and_grads(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y)


@mmd_fused.register_fake
def _(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
    value = x.new_empty(())
    grad_x = x.new_empty(x.shape) if need_grad_x else x.new_empty(0)
    grad_y = y.new_empty(y.shape) if need_grad_y else y.new_empty(0)
    return value, grad_x, grad_y


class MMDFunction(torch.autograd.Function):
    """MMD² by a fused backend; the gradients come out of the forward sweep."""

    @staticmethod
    def forward(ctx, x, y, kernel: str, bandwidths: tuple, unbiased: bool, backend: str):
        need_grad_x, need_grad_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        run = mmd_fused if torch.compiler.is_compiling() else _fused_value_and_grads
        value, grad_x, grad_y = run(x, y, kernel, list(bandwidths), unbiased, backend,
                                    need_grad_x, need_grad_y)
        ctx.save_for_backward(grad_x, grad_y)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "wae_fast: double backward (create_graph=True) is not supported by the fused backends; "
                "use backend='reference' for higher-order gradients")
        grad_x, grad_y = ctx.saved_tensors
        out_x = grad_value * grad_x if ctx.needs_input_grad[0] else None
        out_y = grad_value * grad_y if ctx.needs_input_grad[1] else None
        return out_x, out_y, None, None, None, None
