"""The one custom autograd of wae_fast, and the torch custom op that carries it through torch.compile.

A fused backend returns the statistic *and* its gradients in one sweep over the pairs (MMD² is a
scalar loss, so its input gradients are known in the forward). The backward only scales them:

    ∂L/∂x = grad_output · ∂MMD²/∂x,    ∂L/∂y = grad_output · ∂MMD²/∂y

``MMDFunction`` is that autograd. The caller says which gradients to compute (``need_grad_x``,
``need_grad_y``): ``fused_mmd`` asks for a gradient only for an input that requires grad while grad mode
is on, so under torch.no_grad() / torch.inference_mode() the backend computes the value alone. The
forward returns (value, ∂MMD²/∂x, ∂MMD²/∂y) with the gradients marked non-differentiable; the public
functions return the value.

In eager mode the forward calls the backend directly. Under torch.compile it calls
``torch.ops.wae_fast.mmd_fused`` instead: a custom op (with a fake implementation for shapes) that the
graph keeps as one opaque node, so a model that calls wae_fast compiles without a graph break. (Eager
calls skip the op: its first call in a process pulls in torch._dynamo and sympy, ~150 MB of memory and
a little latency per call.)

torch.func: the function has a ``setup_context`` and a ``vmap`` rule, so torch.func.grad, vjp, jacrev
and vmap work (vmap runs the backend once per batch element). Higher-order gradients (double backward,
create_graph=True followed by a second differentiation, grad of grad, hessian) and forward-mode AD (jvp,
jacfwd) raise a RuntimeError that names backend='reference' (plain autograd), which supports them.
"""
from __future__ import annotations

import torch

from ._dispatch import fused_mmd_and_grads

_HIGHER_ORDER_REFUSED = (
    "wae_fast: higher-order gradients (double backward after create_graph=True, torch.func.grad of a "
    "gradient, hessian) are not supported by the fused backends; use backend='reference' for them")
_FORWARD_MODE_REFUSED = (
    "wae_fast: forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad) is not "
    "supported by the fused backends; use backend='reference', or reverse mode (torch.func.grad, vjp, "
    "jacrev)")


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


class _RefuseHigherOrder(torch.autograd.Function):
    """Identity on a first-order gradient; differentiating it again raises. Its other inputs (x, y)
    only tie it into the graph, so that a second differentiation reaches this node instead of
    silently treating the saved gradients as constants."""

    @staticmethod
    def forward(gradient, *anchors):
        return gradient.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise RuntimeError(_HIGHER_ORDER_REFUSED)

    @staticmethod
    def vmap(info, in_dims, gradient, *anchors):
        return gradient.clone(), in_dims[0]


class MMDFunction(torch.autograd.Function):
    """(MMD², ∂MMD²/∂x, ∂MMD²/∂y) by a fused backend; the gradients come out of the forward sweep.

    This class is what torch.compile traces (Dynamo does not trace a custom ``jvp``); eager calls use
    ``_EagerMMDFunction``, which adds the forward-mode refusal."""

    @staticmethod
    def forward(x, y, kernel: str, bandwidths: tuple, unbiased: bool, backend: str, need_grad_x: bool,
                need_grad_y: bool):
        run = mmd_fused if torch.compiler.is_compiling() else _fused_value_and_grads
        return run(x, y, kernel, list(bandwidths), unbiased, backend, need_grad_x, need_grad_y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y = inputs[0], inputs[1]
        _, grad_x, grad_y = output
        ctx.mark_non_differentiable(grad_x, grad_y)
        ctx.save_for_backward(grad_x, grad_y, x, y)

    @staticmethod
    def backward(ctx, grad_value, _unused_grad_x, _unused_grad_y):
        grad_x, grad_y, x, y = ctx.saved_tensors
        out_x = grad_value * grad_x if ctx.needs_input_grad[0] else None
        out_y = grad_value * grad_y if ctx.needs_input_grad[1] else None
        if torch.is_grad_enabled():  # create_graph=True or a torch.func transform: a second order may follow
            out_x = None if out_x is None else _RefuseHigherOrder.apply(out_x, x, y)
            out_y = None if out_y is None else _RefuseHigherOrder.apply(out_y, x, y)
        return out_x, out_y, None, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
        """One call per batch element, outputs stacked along dimension 0. Each call goes through
        ``apply``, so that ordinary autograd below the vmap (inputs requiring grad) still sees it; a
        batched tensor does not report requires_grad above the vmap, so it is asked again here."""
        x_dim, y_dim = in_dims[0], in_dims[1]
        grad_mode = torch.is_grad_enabled()
        per_element = []
        for b in range(info.batch_size):
            x_b = x if x_dim is None else x.select(x_dim, b)
            y_b = y if y_dim is None else y.select(y_dim, b)
            need_x = need_grad_x or (grad_mode and x_b.requires_grad)
            need_y = need_grad_y or (grad_mode and y_b.requires_grad)
            per_element.append(MMDFunction.apply(x_b, y_b, kernel, bandwidths, unbiased, backend, need_x, need_y))
        stacked = tuple(torch.stack([outputs[k] for outputs in per_element]) for k in range(3))
        return stacked, (0, 0, 0)


class _EagerMMDFunction(MMDFunction):
    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_MODE_REFUSED)


def fused_mmd(x, y, kernel: str, bandwidths: tuple, unbiased: bool, backend: str, need_grad_x: bool,
              need_grad_y: bool) -> torch.Tensor:
    """MMD² by the fused ``backend``, differentiable in x (y) when need_grad_x (need_grad_y) is set."""
    function = MMDFunction if torch.compiler.is_compiling() else _EagerMMDFunction
    value, _, _ = function.apply(x, y, kernel, tuple(bandwidths), unbiased, backend, need_grad_x,
                                 need_grad_y)
    return value
