"""ActNorm followed by a signed ICA layer, computed as one autograd node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from mango.flows.actnorm import ActNorm
from mango.flows.base import FlowLayer
from mango.flows.kernels import Route
from mango.flows.kernels.signed import NormWeights, signed_layer
from mango.flows.signed_attention import SignedCrossAttention


@dataclass(frozen=True)
class FoldedNormAttention:
    """``attention(norm(x))`` for an :class:`ActNorm` ``norm`` and a signed ICA ``attention``.

    .. math::

        X' = X e^{s} + b, \\qquad Y = \\mathrm{ICA}(X'), \\qquad
        \\log|\\det J| = L \\sum_d s_d + 0,

    computed by the one-node kernel (:func:`~mango.flows.kernels.signed.signed_layer`) when
    :meth:`applies`: the layer's route is ``SIGNED_ONE_NODE``, its attention is on, the ActNorm
    needs no data-dependent initialisation, and no forward hook watches either layer (a hook must
    see its layer run). Otherwise the two layers run one after the other. :class:`MangoBlock`
    builds one for each ``ActNorm -> SignedCrossAttention`` pair (:func:`fold_pairs`); the two
    layers stay the block's own modules (the state dict does not change), and the block adds the
    folded ActNorms' log-dets once.

    Args:
        norm: the ActNorm run first.
        attention: the signed ICA layer run on its output.

    References:
        Kingma & Dhariwal, "Glow" (arXiv 1807.03039) for the ActNorm; Truong et al., "MANGO"
        (arXiv 2508.10133) for the layer.

    Example:
        >>> import torch
        >>> from mango.flows import ActNorm, InvertibleCrossAttention
        >>> layer = InvertibleCrossAttention(3, (4, 4), "mmca", 1)
        >>> pair = FoldedNormAttention(ActNorm(3).eval(), layer)
        >>> x = torch.randn(2, 8, 3)
        >>> pair.applies(x), torch.allclose(pair(x), pair.attention(pair.norm(x)[0])[0])
        (True, True)
    """

    norm: ActNorm
    attention: SignedCrossAttention

    @property
    def layers(self) -> tuple[ActNorm, SignedCrossAttention]:
        """The two layers, in the order they run."""
        return self.norm, self.attention

    def applies(self, x: Tensor) -> bool:
        """Whether the pair runs as one node on ``x`` (see the class docstring)."""
        norm, attention = self.norm, self.attention
        return (
            attention.attention_enabled
            and attention.route("forward", x) is Route.SIGNED_ONE_NODE
            and not norm.needs_initialization
            and not (norm.hooked or attention.hooked)
        )

    def __call__(self, x: Tensor) -> Tensor:
        """``Y = attention(norm(x))``; the ActNorm's log-det ``L Σ_d s_d`` is the caller's."""
        affine = NormWeights.of(self.norm, x.dtype)
        return signed_layer(x, self.attention.kernel_weights(x.dtype), affine)


def fold_pairs(layers: Sequence[FlowLayer]) -> list[FlowLayer | FoldedNormAttention]:
    """``layers``, each ``ActNorm -> SignedCrossAttention`` pair as one :class:`FoldedNormAttention`."""
    steps: list[FlowLayer | FoldedNormAttention] = []
    i = 0
    while i < len(layers):
        layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, ActNorm) and isinstance(after, SignedCrossAttention):
            steps.append(FoldedNormAttention(layer, after))
            i += 2
        else:
            steps.append(layer)
            i += 1
    return steps
