"""PatchGAN discriminator (pix2pix): one real/fake logit per overlapping image patch.

``n_layers = 3`` gives the 70 x 70 PatchGAN of pix2pix: conv4/2 (no norm) -> LeakyReLU(0.2),
then ``n_layers - 1`` x [conv4/2, BatchNorm, LeakyReLU] with ``ndf · min(2^i, 8)`` channels, then
conv4/1 + BatchNorm + LeakyReLU and a final conv4/1 to one channel (padding 1 everywhere). A
256 x 256 input gives a 30 x 30 map of logits (no sigmoid: use ``BCEWithLogitsLoss``), each
seeing a 70 x 70 patch. For conditional GANs feed ``cat([inputs, image], dim=1)``.

References:
    Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017,
    arXiv 1611.07004.
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchGANDiscriminator(nn.Module):
    """``(B, in_channels, H, W)`` -> patch logits ``(B, 1, H', W')``.

    Example:
        >>> import torch
        >>> net = PatchGANDiscriminator(6, ndf=8)
        >>> tuple(net(torch.randn(2, 6, 256, 256)).shape)
        (2, 1, 30, 30)
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or ndf < 1 or n_layers < 1:
            raise ValueError(
                f"need positive in_channels, ndf, n_layers, got {in_channels}, {ndf}, {n_layers}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = ndf
        for i in range(1, n_layers + 1):
            nxt = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(channels, nxt, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = nxt
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        for module in self.modules():  # pix2pix init: N(0, 0.02) convs, N(1, 0.02) norm scales
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
