"""The one custom autograd of wae_fast, registered as a torch custom op.

A fused backend returns the statistic *and* its gradients in one sweep over the pairs (MMD² is a
scalar loss, so its input gradients are known in the forward). The backward only scales them:

    ∂L/∂x = grad_output · ∂MMD²/∂x,    ∂L/∂y = grad_output · ∂MMD²/∂y

Registered through torch.library so torch.compile keeps the call in the graph (no graph break).
Double backward is not supported by the fused backends: backward raises under create_graph=True;
the "reference" backend (plain autograd) supports it.
"""
from __future__ import annotations

import torch

from ._dispatch import fused_mmd_and_grads


@torch.library.custom_op("wae_fast::mmd_fused", mutates_args=())
def mmd_fused(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: list[float], unbiased: bool,
              backend: str, need_grad_x: bool, need_grad_y: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MMD², ∂MMD²/∂x or an empty tensor, ∂MMD²/∂y or an empty tensor), all in the input dtype."""
    value, grad_x, grad_y = fused_mmd_and_grads(
        backend, x.contiguous(), y.contiguous(), kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
    value = value.to(x.dtype)
    grad_x = grad_x.to(x.dtype) if need_grad_x else x.new_empty(0)
    grad_y = grad_y.to(y.dtype) if need_grad_y else y.new_empty(0)
    return value, grad_x, grad_y


@mmd_fused.register_fake
def _(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
    value = x.new_empty(())
    grad_x = x.new_empty(x.shape) if need_grad_x else x.new_empty(0)
    grad_y = y.new_empty(y.shape) if need_grad_y else y.new_empty(0)
    return value, grad_x, grad_y


def _setup_context(ctx, inputs, output):
    _, grad_x, grad_y = output
    ctx.need_grad_x, ctx.need_grad_y = inputs[6], inputs[7]
    ctx.save_for_backward(grad_x, grad_y)


def _backward(ctx, grad_value, _unused_grad_x, _unused_grad_y):
    if torch.is_grad_enabled():
        raise RuntimeError(
            "wae_fast: double backward (create_graph=True) is not supported by the fused backends; "
            "use backend='reference' for higher-order gradients")
    grad_x, grad_y = ctx.saved_tensors
    out_x = grad_value * grad_x if ctx.need_grad_x else None
    out_y = grad_value * grad_y if ctx.need_grad_y else None
    return out_x, out_y, None, None, None, None, None, None


mmd_fused.register_autograd(_backward, setup_context=_setup_context)
