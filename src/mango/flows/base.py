"""The flow-layer contract shared by every module in :mod:`mango.flows`.

Direction: **forward = data -> latent**. Every layer maps tokens ``x`` of shape ``(B, L, D)`` to
``y`` of the same shape and returns the log-absolute-determinant of its Jacobian per sample:

.. math::

    y, \\log|\\det \\partial y / \\partial x| = f(x), \\qquad
    x, -\\log|\\det \\partial y / \\partial x| = f^{-1}(y).

``logdet`` has shape ``(B,)`` and sums over all ``L * D`` entries of one sample.

Note to implementers: subclass :class:`FlowLayer`, implement ``_forward`` and ``_inverse`` (both
returning ``(tensor, logdet)``) and keep the math in the class docstring. The public ``forward``
and ``inverse`` validate the shape and run the math in float32 or better even under autocast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn


def check_tokens(x: Tensor, length: int | None, dim: int | None, where: str) -> None:
    """Raise a one-line ``ValueError`` unless ``x`` is a floating ``(B, length, dim)`` tensor."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{where}: expected a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point tensor, got {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"{where}: expected tokens shaped (B, L, D), got shape {tuple(x.shape)}")
    if length is not None and x.shape[1] != length:
        raise ValueError(
            f"{where}: expected {length} tokens (sum of the flow's token counts), got {x.shape[1]}"
        )
    if dim is not None and x.shape[2] != dim:
        raise ValueError(f"{where}: expected {dim} channels per token, got {x.shape[2]}")


def flow_dtype(layer: nn.Module, x: Tensor, where: str) -> torch.dtype:
    """The dtype the flow math runs in: the layer's parameter dtype (float32 or float64).

    Narrower inputs (float16, bfloat16) are computed in that dtype; a float64 input to a float32
    layer is a ``ValueError`` rather than a silent loss of precision.
    """
    param = next(layer.parameters(), None)
    target = (
        param.dtype
        if param is not None
        else (torch.float64 if x.dtype == torch.float64 else torch.float32)
    )
    if x.dtype == torch.float64 and target != torch.float64:
        raise ValueError(
            f"{where}: float64 input for a {str(target).removeprefix('torch.')} layer; "
            "call .double() on the flow or pass float32 tokens"
        )
    return target


class FlowLayer(nn.Module, ABC):
    """Base class of invertible token layers: ``y, logdet = layer(x)``; ``x, -logdet = layer.inverse(y)``.

    Subclasses set ``self.length`` (tokens, or ``None`` for any) and ``self.dim`` (channels, or
    ``None`` for any) and implement :meth:`_forward` and :meth:`_inverse`.
    """

    length: int | None = None
    dim: int | None = None

    @property
    def hooked(self) -> bool:
        """Whether forward (pre-)hooks watch this layer: a fused computation must not skip it."""
        return bool(self._forward_hooks or self._forward_pre_hooks)

    @abstractmethod
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data -> latent on validated float32/float64 input."""

    @abstractmethod
    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Latent -> data on validated float32/float64 input."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data ``x`` (B, L, D) to ``(y, logdet)`` with ``logdet`` shaped (B,)."""
        where = type(self).__name__
        check_tokens(x, self.length, self.dim, where)
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.to(flow_dtype(self, x, where)))

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map latent ``y`` (B, L, D) back to ``(x, logdet_inv)`` with ``logdet_inv = -logdet``."""
        where = f"{type(self).__name__}.inverse"
        check_tokens(y, self.length, self.dim, where)
        with torch.autocast(y.device.type, enabled=False):
            return self._inverse(y.to(flow_dtype(self, y, where)))


class SequentialFlow(FlowLayer):
    """Composition ``f_K ∘ ... ∘ f_1``: log-dets add; the inverse runs the layers in reverse.

    .. math::

        \\log|\\det J| = \\sum_k \\log|\\det J_{f_k}|

    Example:
        >>> from mango.flows import ActNorm
        >>> flow = SequentialFlow([ActNorm(4), ActNorm(4)])
        >>> y, logdet = flow(torch.randn(2, 3, 4))
        >>> tuple(y.shape), tuple(logdet.shape)
        ((2, 3, 4), (2,))
    """

    def __init__(self, layers: Iterable[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if len(self.layers) == 0:
            raise ValueError("SequentialFlow needs at least one layer")
        self.length = self.layers[0].length
        self.dim = self.layers[0].dim

    def __iter__(self) -> Iterator[FlowLayer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, logdet = layer(x)
            total = total + logdet
        return x, total

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        total = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y)
            total = total + logdet
        return y, total
