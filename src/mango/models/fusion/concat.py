"""Concatenation (``model.fusion: concat``, and ``single`` / ``late``): tokens passed on unchanged.

The task's readout then concatenates them (per position, or flattened), so this is the
parameter-free baseline every other fusion is compared with.
"""

from __future__ import annotations

from torch import Tensor

from mango.models.fusion.base import Fusion, FusionOutput


class IdentityFusion(Fusion):
    """The tokens unchanged, no density: :math:`y_m = x_m`.

    ``present`` is accepted for the interface and ignored here: absent modalities keep the
    tokens of their zero-filled input, or what the fusion's filler puts in their place
    (``mean``/``regress`` fills, :mod:`mango.models.fusion.filler`).

    Args:
        dim: token width ``D``.
        tokens: token counts ``L_m`` of the modalities.

    Example:
        >>> import torch
        >>> x = [torch.randn(2, 3, 4), torch.randn(2, 5, 4)]
        >>> out = IdentityFusion(4, [3, 5])(x)
        >>> all(a is b for a, b in zip(out.tokens, x)), out.bits_per_dim
        (True, None)

    References:
        | MANGO: Multimodal Attention-based Normalizing Flow Approach to Fusion Learning
        | (Truong et al., NeurIPS 2025), its concatenation baseline
        | https://arxiv.org/abs/2508.10133
    """

    name = "concat"

    def fuse(self, tokens: list[Tensor], present: Tensor | None, with_nll: bool) -> FusionOutput:
        return FusionOutput(list(tokens))
