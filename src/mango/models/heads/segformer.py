"""The SegFormer all-MLP decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SegFormerHead(nn.Module):
    """All-MLP decoder: multi-scale features -> logits at the resolution of the first map.

    For features ``F_i`` of shapes ``(B, in_channels[i], H_i, W_i)`` (``H_0 x W_0`` is the finest,
    stride 4 for a MiT encoder):

    1. ``E_i = Linear_i(F_i)`` per pixel, ``in_channels[i] -> embed_dim``;
    2. ``U_i = upsample(E_i)`` bilinearly to ``H_0 x W_0``;
    3. ``Z = ReLU(BN(Conv1x1(concat(U_{n-1}, ..., U_0))))``, ``n * embed_dim -> embed_dim``
       (coarsest stage first, as in the reference implementation);
    4. ``logits = Conv1x1(Dropout(Z))``, ``embed_dim -> num_classes``, of shape
       ``(B, num_classes, H_0, W_0)``.

    References:
        Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with
        Transformers", NeurIPS 2021 (arXiv 2105.15203), Section 3.2.

    Example:
        >>> import torch
        >>> head = SegFormerHead([8, 16], embed_dim=4, num_classes=3)
        >>> features = [torch.zeros(2, 8, 16, 16), torch.zeros(2, 16, 8, 8)]
        >>> tuple(head(features).shape)
        (2, 3, 16, 16)
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.projections = nn.ModuleList([nn.Linear(c, embed_dim) for c in self.in_channels])
        self.fuse = nn.Conv2d(len(self.in_channels) * embed_dim, embed_dim, 1, bias=False)
        self.norm = nn.BatchNorm2d(embed_dim)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if [f.shape[1] for f in features] != self.in_channels:
            raise ValueError(
                f"SegFormerHead expects feature channels {self.in_channels}, "
                f"got {[f.shape[1] for f in features]}"
            )
        size = features[0].shape[-2:]
        upsampled = []
        for projection, feature in zip(self.projections, features, strict=True):
            embedded = projection(feature.movedim(1, -1)).movedim(-1, 1)
            if embedded.shape[-2:] != size:
                embedded = F.interpolate(embedded, size=size, mode="bilinear", align_corners=False)
            upsampled.append(embedded)
        fused = self.activation(self.norm(self.fuse(torch.cat(upsampled[::-1], dim=1))))
        return self.classifier(self.dropout(fused))
