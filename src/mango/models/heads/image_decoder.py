"""Image decoder head: a fused feature grid -> an RGB image in [-1, 1].

``(B, C, h, w)`` -> 3x3 conv to ``width`` channels -> ``upsample_steps`` x [nearest 2x upsample,
3x3 conv, GroupNorm, ReLU] (channels halved at each step, never below ``min(width, 16)``) ->
3x3 conv to ``out_channels`` -> tanh. Output ``(B, out_channels, h·2^k, w·2^k)`` with
``k = upsample_steps``. Nearest upsampling followed by a convolution avoids the checkerboard
artefacts of transposed convolutions (Odena et al., Distill 2016). GroupNorm (not BatchNorm /
InstanceNorm) keeps the head usable with batch size 1 and 1x1 grids.
"""

from __future__ import annotations

from torch import Tensor, nn


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 2 channels (so 1x1 grids normalise)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0 and channels // g >= 2)
    return nn.GroupNorm(groups, channels)


class ImageDecoder(nn.Module):
    """Feature grid ``(B, in_channels, h, w)`` -> image ``(B, out_channels, h·2^k, w·2^k)``.

    Example:
        >>> import torch
        >>> head = ImageDecoder(64, 3, upsample_steps=2, width=32)
        >>> y = head(torch.randn(2, 64, 4, 5))
        >>> tuple(y.shape), bool(y.abs().max() <= 1)
        ((2, 3, 16, 20), True)
    """

    def __init__(
        self, in_channels: int, out_channels: int = 3, upsample_steps: int = 4, width: int = 64
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or width < 2 or upsample_steps < 0:
            raise ValueError(
                f"need in/out channels >= 1, width >= 2, upsample_steps >= 0, got in={in_channels},"
                f" out={out_channels}, width={width}, upsample_steps={upsample_steps}"
            )
        self.upsample_steps = upsample_steps
        floor = min(width, 16)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, padding=1),
            _group_norm(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for _ in range(upsample_steps):
            nxt = max(channels // 2, floor)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(channels, nxt, 3, padding=1),
                _group_norm(nxt),
                nn.ReLU(inplace=True),
            ]
            channels = nxt
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
