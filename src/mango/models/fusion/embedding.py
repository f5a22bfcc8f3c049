"""Features to fusion tokens: a linear projection plus learned position and modality embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """Project features to ``dim`` channels and add learned position and modality embeddings.

    Accepts a feature map ``(B, C, h, w)`` (flattened row-major to ``h * w`` tokens) or a sequence
    ``(B, T, C)``; returns ``(B, L, dim)`` with ``L = length``.
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
