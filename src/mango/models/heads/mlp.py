"""A small MLP head on pooled fused features (classification tasks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


class PooledHeadsMixin:
    """For classifiers that read each modality's fused tokens out as one vector (a pooled
    ``(B, D)`` or the flattened ``(B, L_m·D)``): one :class:`MLPHead` on their concatenation
    (``self.head``) or, for late fusion, one per modality (``self.heads``), each of the same
    hidden width, with the logits averaged. A mixin, so the state-dict keys stay ``head.*`` /
    ``heads.<modality>.*``."""

    modalities: Sequence[str]

    def _build_heads(
        self, widths: Sequence[int], hidden: int, outputs: int, dropout: float, late: bool
    ) -> None:
        """``widths``: the read-out vector's length per modality, in :attr:`modalities` order."""
        if late:
            self.heads = nn.ModuleDict(
                {
                    m: MLPHead(width, hidden, outputs, dropout)
                    for m, width in zip(self.modalities, widths, strict=True)
                }
            )
        else:
            self.head = MLPHead(sum(widths), hidden, outputs, dropout)

    def _pooled_logits(self, pooled: Sequence[Tensor]) -> Tensor:
        if hasattr(self, "heads"):
            logits = [self.heads[m](p) for m, p in zip(self.modalities, pooled, strict=True)]
            return torch.stack(logits).mean(0)
        return self.head(torch.cat(list(pooled), dim=-1))
