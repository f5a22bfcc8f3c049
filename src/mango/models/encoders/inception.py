"""The FID Inception-v3 in plain torch, key-compatible with pytorch-fid's weights.

pytorch-fid ports the TensorFlow graph ``inception-2015-12-05`` used by the original FID code to
torchvision's Inception-v3 layout, with four block types changed to match TF
(``FIDInceptionA``, ``FIDInceptionC``, ``FIDInceptionE_1``: average pooling that does not count
the zero padding; ``FIDInceptionE_2``: max pooling in the pool branch) and 1008 classes. Its
weight file ``pt_inception-2015-12-05-6726825d.pth`` loads into :class:`FIDInceptionV3` key for
key (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.bias``).

Forward (as pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``): RGB in
[0, 1] ``(B, 3, H, W)`` -> bilinear resize to 299 x 299 -> ``2 x - 1`` -> network -> global
average pool -> ``(B, 2048)`` features (the FID pool3 features).

References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016,
    arXiv 1512.00567. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium", NeurIPS 2017, arXiv 1706.08500 (FID).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import CheckpointError
from mango.models.weights import read_state_dict

Kernel = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """``Conv2d(bias=False) -> BatchNorm2d(eps=0.001) -> ReLU``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Kernel,
        stride: int = 1,
        padding: Kernel = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    """3x3 average pooling, stride 1, padding excluded from the average (TF semantics)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (64 + 64 + 96 + pool_features)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool(x))], 1
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (384 + 96 + in)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (4 x 192 channels)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            dbl = layer(dbl)
        return torch.cat([self.branch1x1(x), branch7x7, dbl, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 (320 + 192 + in)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with expanded 3x3 branches (320 + 768 + 768 + 192 = 2048 channels).

    ``max_pool`` false: ``FIDInceptionE_1`` (average pool without padding); true:
    ``FIDInceptionE_2`` (3x3 max pool, stride 1), as in the TF graph.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3: RGB in [0, 1] ``(B, 3, H, W)`` -> ``(B, 2048)`` features.

    ``num_features`` tells torchmetrics' FID / KID the feature size. ``fc`` (2048 -> 1008) is
    kept only so that the weight file loads unchanged; the features are taken before it.

    Example:
        >>> net = FIDInceptionV3().eval()
        >>> sum(p.numel() for p in net.parameters())
        23850960
        >>> tuple(net.state_dict()["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape)
        (384, 384, 3, 1)
    """

    num_features = 2048
    input_size = 299

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] (uint8 in [0, 255] accepted) -> ``(B, 2048)``."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        size = (self.input_size, self.input_size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(path: str | os.PathLike[str]) -> FIDInceptionV3:
    """:class:`FIDInceptionV3` with the weights of ``pt_inception-2015-12-05-6726825d.pth``.

    The file must hold exactly the model's tensors with the same shapes (``num_batches_tracked``
    counters may be absent). Returns the model in eval mode.

    Raises:
        CheckpointError: the file is missing or unreadable, or a key is missing, unexpected or
            of the wrong shape (the first such key is named).
    """
    file = Path(path)
    state = read_state_dict(file, "FID Inception")
    model = FIDInceptionV3()
    expected = {
        k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    given = {k: v for k, v in state.items() if not str(k).endswith("num_batches_tracked")}
    for key in given:
        if key not in expected:
            raise CheckpointError(f"{file}: not the FID Inception weights (unexpected key {key})")
    for key in expected:
        if key not in given:
            raise CheckpointError(f"{file}: not the FID Inception weights (missing key {key})")
        if not isinstance(given[key], Tensor) or given[key].shape != expected[key].shape:
            shape = tuple(getattr(given[key], "shape", ()))
            raise CheckpointError(
                f"{file}: key {key} has shape {shape}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(given, strict=False)
    return model.eval()
