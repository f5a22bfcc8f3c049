"""Build multi-scale (pyramid) image encoders by name: ``conv-*`` for CPU, ``mit-b0..b5`` (SegFormer)."""

from __future__ import annotations

from torch import nn

from mango.errors import ConfigError
from mango.models.encoders.conv import ConvPyramidEncoder

CONV_WIDTHS = {
    "conv-tiny": (8, 16, 32, 32),
    "conv-small": (16, 32, 64, 64),
    "conv-base": (32, 64, 128, 128),
}
MIT_NAMES = ("mit-tiny", "mit-b0", "mit-b1", "mit-b2", "mit-b3", "mit-b4", "mit-b5")
ENCODER_NAMES = (*CONV_WIDTHS, *MIT_NAMES)


def build_pyramid_encoder(name: str, in_channels: int, pretrained: str | None = None) -> nn.Module:
    """Return an encoder whose ``forward(x)`` gives 4 maps, with ``out_channels`` and ``strides``.

    ``pretrained`` (a local file or folder) is only meaningful for MiT encoders.
    """
    if name in CONV_WIDTHS:
        if pretrained:
            raise ConfigError(f"model.pretrained: encoder {name!r} has no pretrained weights")
        return ConvPyramidEncoder(in_channels, CONV_WIDTHS[name])
    if name in MIT_NAMES:
        from mango.models.encoders.mit import MiTEncoder

        return MiTEncoder(name.removeprefix("mit-"), in_channels=in_channels, pretrained=pretrained)
    raise ConfigError(
        f"model.encoder: unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}"
    )
