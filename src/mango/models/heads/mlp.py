"""A small MLP head on pooled fused features (classification tasks)."""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``LayerNorm -> Linear(in, hidden) -> GELU -> Dropout -> Linear(hidden, outputs)``.

    Example:
        >>> import torch
        >>> MLPHead(8, 16, 3, dropout=0.1)(torch.randn(2, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, hidden: int, outputs: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_features),
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)
