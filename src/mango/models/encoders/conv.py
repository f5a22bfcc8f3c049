"""A small convolutional feature pyramid: a fast encoder for CPU runs and the synthetic demo."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvPyramidEncoder(nn.Module):
    """Four stages of ``stride-2 conv -> conv`` (each conv + BatchNorm + ReLU).

    ``forward(x)`` returns four maps at strides 2, 4, 8, 16 with ``out_channels`` channels, the
    same interface as :class:`~mango.models.encoders.mit.MiTEncoder` (strides 4..32).

    Example:
        >>> import torch
        >>> encoder = ConvPyramidEncoder(in_channels=1, widths=(8, 16, 32, 32))
        >>> [tuple(f.shape) for f in encoder(torch.zeros(2, 1, 32, 32))]
        [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    """

    strides = (2, 4, 8, 16)

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"ConvPyramidEncoder needs 4 stage widths, got {list(widths)}")
        self.out_channels = list(widths)
        stages, previous = [], in_channels
        for width in widths:
            stages.append(nn.Sequential(_conv_bn(previous, width, 2), _conv_bn(width, width, 1)))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
