"""Features to fusion tokens: a linear projection plus learned position and modality embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """Project features to ``dim`` channels and add learned position and modality embeddings.

    .. math::

        t = f W + b + p + e, \\qquad p \\in \\mathbb{R}^{L \\times D}, \\ e \\in \\mathbb{R}^D

    Accepts a feature map ``(B, C, h, w)`` (flattened row-major to ``h * w`` tokens) or a sequence
    ``(B, T, C)``; returns ``(B, L, dim)`` with ``L = length``. ``p`` and ``e`` start
    truncated-normal (std 0.02).

    Args:
        in_channels: feature channels ``C`` of the encoder.
        dim: token width ``D``.
        length: the number of tokens ``L`` the encoder must give (``h * w`` or ``T``).

    Example:
        >>> import torch
        >>> embed = TokenEmbedding(in_channels=3, dim=8, length=6)
        >>> tuple(embed(torch.randn(2, 3, 2, 3)).shape)
        (2, 6, 8)

    References:
        | An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale
        | (Dosovitskiy et al., ICLR 2021), https://arxiv.org/abs/2010.11929
    """

    def __init__(self, in_channels: int, dim: int, length: int) -> None:
        super().__init__()
        self.length = length
        self.proj = nn.Linear(in_channels, dim)
        self.position = nn.Parameter(torch.zeros(1, length, dim))
        self.modality = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.modality, std=0.02)

    def forward(self, features: Tensor) -> Tensor:
        tokens = features.flatten(2).transpose(1, 2) if features.dim() == 4 else features
        if tokens.shape[1] != self.length:
            raise ValueError(
                f"expected {self.length} tokens from the encoder, got {tokens.shape[1]} "
                f"(input size differs from the one the flow was built for)"
            )
        return self.proj(tokens) + self.position + self.modality
