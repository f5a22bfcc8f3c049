"""Memory-free backpropagation through a stack of invertible layers (RevNet / i-RevNet style).

Training a flow normally stores every intermediate activation of every layer. Because each layer
is invertible, the input of a layer can instead be **recomputed from its output** during the
backward pass: :class:`InvertibleBackprop` runs the forward pass without recording a graph, keeps
only the final output, and in backward walks the layers in reverse, reconstructing each input with
``layer.inverse`` and re-running that one layer with autograd to get its gradients. Peak memory is
that of one layer instead of all of them; the price is one inverse and one extra forward per layer.
The gradients equal the standard ones up to the round-trip error of the inverse (tested in float64).

References:
    Gomez et al., "The Reversible Residual Network" (arXiv 1707.04585);
    Jacobsen et al., "i-RevNet" (arXiv 1802.07088).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

_STATE = threading.local()


def input_gradients_only() -> bool:
    """Whether the backward now running wants input gradients only (see below).

    True inside the input-only product ``Jᵀ g`` of the detached-NLL passes, where any parameter
    gradient is discarded: hand-written backwards (:mod:`mango.flows.kernels.signed`) may skip
    them. It is thread-local, and a backward that does not look just computes what autograd
    discards.
    """
    return getattr(_STATE, "input_only", False)


@contextmanager
def _only_input_gradients() -> Iterator[None]:
    previous = input_gradients_only()
    _STATE.input_only = True
    try:
        yield
    finally:
        _STATE.input_only = previous


def _run_without_graph(x: Tensor, layers: Sequence[nn.Module]) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        total = x.new_zeros(x.shape[0])
        y = x
        for layer in layers:
            y, logdet = layer(y)
            total = total + logdet
    return y.detach(), total


def _rebuild(layer: nn.Module, y: Tensor) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Invert ``layer`` at its output ``y`` and re-run it with autograd: ``(x, y, logdet, params)``."""
    with torch.no_grad():
        x = layer.inverse(y)[0]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y_again, logdet = layer(x)
    return x, y_again, logdet, [p for p in layer.parameters() if p.requires_grad]


def _accumulate(grads: dict[int, Tensor], params: Sequence[Tensor], new: Sequence[Any]) -> None:
    for p, g in zip(params, new, strict=True):
        if g is not None:
            grads[id(p)] = grads[id(p)] + g if id(p) in grads else g


class InvertibleBackprop(torch.autograd.Function):
    """``(y, logdet) = layers(x)`` storing only ``y``; gradients by inversion + local recomputation."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, layers: Sequence[nn.Module], *params: Tensor
    ) -> tuple[Tensor, Tensor]:
        y, total = _run_without_graph(x, layers)
        ctx.layers = layers
        ctx.params = params
        ctx.save_for_backward(y)
        return y, total

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, grad_logdet: Tensor) -> tuple[Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        grads: dict[int, Tensor] = {}
        for layer in reversed(ctx.layers):
            x, y_again, logdet, own = _rebuild(layer, y)
            result = torch.autograd.grad(
                (y_again, logdet), [x, *own], (grad_y, grad_logdet), allow_unused=True
            )
            _accumulate(grads, own, result[1:])
            grad_y, y = result[0], x.detach()
        return (grad_y, None, *(grads.get(id(p)) for p in ctx.params))


def invertible_backprop(x: Tensor, layers: Sequence[nn.Module]) -> tuple[Tensor, Tensor]:
    """Apply ``layers`` to ``x`` with memory-free backpropagation (see :class:`InvertibleBackprop`)."""
    params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
    return InvertibleBackprop.apply(x, list(layers), *params)


class _SplitInvertibleBackprop(torch.autograd.Function):
    """:class:`InvertibleBackprop` with the outputs of :func:`detached_density_pass`.

    Backward carries two cotangents through the layers: the task's ``g`` (which reaches ``x``)
    and the density's ``h`` (which stops there). Per layer, one rebuild serves both: an
    input-only product ``Jᵀ g`` and one full product with ``(g + h, g_logdet)``, whose parameter
    part is the total and whose input part minus ``Jᵀ g`` is the density's cotangent below.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, layers: Sequence[nn.Module], *params: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, total = _run_without_graph(x, layers)
        ctx.layers = layers
        ctx.params = params
        ctx.save_for_backward(y)
        return y, y.clone(), total

    @staticmethod
    def backward(
        ctx: Any, grad_y: Tensor | None, grad_density: Tensor | None, grad_logdet: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        task = torch.zeros_like(y) if grad_y is None else grad_y
        density = torch.zeros_like(y) if grad_density is None else grad_density
        grad_logdet = torch.zeros_like(y[:, 0, 0]) if grad_logdet is None else grad_logdet
        grads: dict[int, Tensor] = {}
        for layer in reversed(ctx.layers):
            x, y_again, logdet, own = _rebuild(layer, y)
            with _only_input_gradients():
                (task_in,) = torch.autograd.grad(y_again, x, task, retain_graph=True)
            result = torch.autograd.grad(
                (y_again, logdet), [x, *own], (task + density, grad_logdet), allow_unused=True
            )
            _accumulate(grads, own, result[1:])
            task, density, y = task_in, result[0] - task_in, x.detach()
        grad_x = task if ctx.needs_input_grad[0] and grad_y is not None else None
        return (grad_x, None, *(grads.get(id(p)) for p in ctx.params))


def split_invertible_backprop(
    x: Tensor, layers: Sequence[nn.Module]
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`detached_density_pass` for a stack run with memory-free backpropagation."""
    params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
    return _SplitInvertibleBackprop.apply(x, list(layers), *params)


class _DensityGradientSplit(torch.autograd.Function):
    """One flow pass whose density outputs send gradient to the parameters only (see below)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, flow: nn.Module, *params: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        inner = x.detach().requires_grad_(True)
        with torch.enable_grad():
            z, logdet = flow(inner)
        ctx.graph = (inner, z, logdet)
        ctx.params = params
        z_out = z.detach()
        return z_out, z_out.clone(), logdet.detach()

    @staticmethod
    def backward(
        ctx: Any, grad_z: Tensor | None, grad_z_density: Tensor | None, grad_logdet: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        inner, z, logdet = ctx.graph
        ctx.graph = None
        grad_x = None
        if grad_z is not None and ctx.needs_input_grad[0]:
            # Input gradient of the task term only: J^T grad_z (no weight gradients computed).
            with _only_input_gradients():
                (grad_x,) = torch.autograd.grad(z, inner, grad_z, retain_graph=True)
        total_z = sum(g for g in (grad_z, grad_z_density) if g is not None)
        outputs, cotangents = ([z], [total_z]) if isinstance(total_z, Tensor) else ([], [])
        if grad_logdet is not None:
            outputs.append(logdet)
            cotangents.append(grad_logdet)
        grads = torch.autograd.grad(outputs, ctx.params, cotangents, allow_unused=True)
        return (grad_x, None, *grads)


def detached_density_pass(flow: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(z, z_density, logdet)`` from **one** pass of ``flow`` over ``x``.

    ``z`` behaves like ``flow(x)[0]``: its gradient reaches ``x`` and the parameters.
    ``(z_density, logdet)`` behave like ``flow(x.detach())``: a loss on them (the NLL) trains the
    parameters but sends nothing to ``x``. This replaces a second, detached flow pass: backward
    runs one full vector-Jacobian product for the parameters with the summed cotangent, and one
    input-only product ``J^T g_z`` for ``x``.
    """
    params = [p for p in flow.parameters() if p.requires_grad]
    return _DensityGradientSplit.apply(x, flow, *params)
