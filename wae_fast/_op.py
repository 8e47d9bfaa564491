"""The autograd of the fused backends, and the torch custom op that carries it through torch.compile.

A fused backend returns the statistic *and* its gradients in one sweep over the pairs (MMD² is a scalar
loss, so its input gradients are known in the forward). The backward only scales them:

    ∂L/∂x = grad_output · ∂MMD²/∂x,    ∂L/∂y = grad_output · ∂MMD²/∂y

Eager calls go through ``_EagerMMD`` (a ctx-style Function applied directly: no per-call signature
binding, no materialised zero gradients, nothing allocated in backward but the product). torch.func
transforms (grad, vjp, jacrev, vmap) and torch.compile go through ``MMDFunction``, which has the
``setup_context`` and ``vmap`` they need; under torch.compile it calls ``torch.ops.wae_fast.mmd_fused``, a
custom op the graph keeps as one opaque node. Higher-order gradients (double backward after
create_graph=True, hessian) and forward-mode AD (jvp, jacfwd) raise a RuntimeError that names
backend='reference', which supports them.
"""
from __future__ import annotations

import torch

from . import _dispatch
from ._problem import Problem

_HIGHER_ORDER_REFUSED = (
    "wae_fast: higher-order gradients (double backward after create_graph=True, torch.func.grad of a "
    "gradient, hessian) are not supported by the fused backends; use backend='reference' for them")
_FORWARD_MODE_REFUSED = (
    "wae_fast: forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad) is not "
    "supported by the fused backends; use backend='reference', or reverse mode (torch.func.grad, vjp, "
    "jacrev)")


def value_and_grads(problem: Problem):
    """(MMD² [0-dim], ∂MMD²/∂x | None, ∂MMD²/∂y | None) in the input dtype, by problem.backend (fused)."""
    result = _dispatch.engine(problem.backend).mmd(problem)
    return result.value, result.grad_x, result.grad_y


def _scaled(grad_value, gradient, anchors):
    """grad_value · gradient; when grad mode is on in backward (create_graph=True or a torch.func
    transform) the product is wrapped so that differentiating it again raises."""
    out = grad_value * gradient
    if torch.is_grad_enabled():
        out = _RefuseHigherOrder.apply(out, *anchors)
    return out


class _EagerMMD(torch.autograd.Function):
    """MMD² whose gradients come out of the forward: ``compute(argument)`` returns (value, ∂value/∂x | None,
    ∂value/∂y | None); backward scales them. compute is value_and_grads (a Problem) for wae_fast.mmd, and
    the global statistic's share of this process for wae_fast.distributed."""

    @staticmethod
    def forward(ctx, x, y, compute, argument):
        ctx.set_materialize_grads(False)
        value, ctx.grad_x, ctx.grad_y = compute(argument)
        ctx.anchors = (x, y)  # what a second differentiation would reach (_RefuseHigherOrder)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        grad_x, grad_y = ctx.grad_x, ctx.grad_y  # kept: backward may run again (retain_graph=True)
        if grad_value is None:
            return None, None, None, None
        anchors = ctx.anchors
        out_x = _scaled(grad_value, grad_x, anchors) if grad_x is not None and ctx.needs_input_grad[0] else None
        out_y = _scaled(grad_value, grad_y, anchors) if grad_y is not None and ctx.needs_input_grad[1] else None
        return out_x, out_y, None, None

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_MODE_REFUSED)


try:  # Function.apply binds the arguments by signature on every call; the C entry behind it does not
    apply_eager = torch._C._FunctionBase.__dict__["apply"].__get__(None, _EagerMMD)
except (AttributeError, KeyError):  # pragma: no cover - other torch builds
    apply_eager = _EagerMMD.apply


class _RefuseHigherOrder(torch.autograd.Function):
    """Identity on a first-order gradient; differentiating it again raises. Its other inputs (x, y)
    only tie it into the graph, so that a second differentiation reaches this node instead of
    silently treating the gradients as constants."""

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


def _problem_of(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y) -> Problem:
    from .spec import KERNEL_IDS
    return Problem(x, y, kernel, KERNEL_IDS[kernel], tuple(bandwidths), unbiased, need_grad_x, need_grad_y,
                   backend)


def _value_and_grad_tensors(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
    """(MMD², ∂MMD²/∂x or an empty tensor, ∂MMD²/∂y or an empty tensor), all in the input dtype."""
    value, grad_x, grad_y = value_and_grads(
        _problem_of(x.contiguous(), y.contiguous(), kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y))
    return value, x.new_empty(0) if grad_x is None else grad_x, y.new_empty(0) if grad_y is None else grad_y


@torch.library.custom_op("wae_fast::mmd_fused", mutates_args=())
def mmd_fused(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: list[float], unbiased: bool,
              backend: str, need_grad_x: bool, need_grad_y: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MMD², ∂MMD²/∂x or an empty tensor, ∂MMD²/∂y or an empty tensor), all in the input dtype."""
    return _value_and_grad_tensors(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y)


@mmd_fused.register_fake
def _(x, y, kernel, bandwidths, unbiased, backend, need_grad_x, need_grad_y):
    value = x.new_empty(())
    grad_x = x.new_empty(x.shape) if need_grad_x else x.new_empty(0)
    grad_y = y.new_empty(y.shape) if need_grad_y else y.new_empty(0)
    return value, grad_x, grad_y


class MMDFunction(torch.autograd.Function):
    """(MMD², ∂MMD²/∂x, ∂MMD²/∂y) by a fused backend, for torch.func transforms and torch.compile (Dynamo
    does not trace a custom ``jvp``; ``_FuncMMDFunction`` adds the forward-mode refusal)."""

    @staticmethod
    def forward(x, y, kernel: str, bandwidths: tuple, unbiased: bool, backend: str, need_grad_x: bool,
                need_grad_y: bool):
        run = mmd_fused if torch.compiler.is_compiling() else _value_and_grad_tensors
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
        out_x = _scaled(grad_value, grad_x, (x, y)) if ctx.needs_input_grad[0] else None
        out_y = _scaled(grad_value, grad_y, (x, y)) if ctx.needs_input_grad[1] else None
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


class _FuncMMDFunction(MMDFunction):
    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_FORWARD_MODE_REFUSED)


def fused_mmd(problem: Problem) -> torch.Tensor:
    """MMD² of a resolved Problem by its fused backend, differentiable in x (y) when need_grad_x
    (need_grad_y) is set."""
    compiling = torch.compiler.is_compiling()
    if not compiling and not torch._C._are_functorch_transforms_active():
        return apply_eager(problem.x, problem.y, value_and_grads, problem)
    function = MMDFunction if compiling else _FuncMMDFunction
    value, _, _ = function.apply(problem.x, problem.y, problem.kernel, problem.bandwidths, problem.unbiased,
                                 problem.backend, problem.need_grad_x, problem.need_grad_y)
    return value
