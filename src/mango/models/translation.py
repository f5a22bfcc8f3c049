"""Multimodal image-to-image translation (Taskonomy): several input domains -> one target image.

Pipeline (every fusion mode shares the encoders, token embeddings and decoder):

- each input domain ``(B, 3, S, S)`` -> its own :class:`DomainEncoder` (``k = len(widths)``
  stride-2 stages) -> a ``(B, widths[-1], s, s)`` grid, ``s = S / 2^k`` (256 -> 16 with 4 stages,
  32 -> 4 with 3) -> :class:`~mango.models.fusion.TokenEmbedding` -> ``(B, s², D)``;
- fusion (``fusion``, built by :func:`~mango.models.fusion.build_fusion`): ``mango`` =
  :class:`~mango.models.fusion.FlowFusion` over the tokens of all inputs; ``concat`` =
  :class:`~mango.models.fusion.IdentityFusion` (same tokens, no flow); an attention baseline
  (``transformer``, ``tokenfusion``, ...) on the same tokens; ``single`` = the first input only;
- ``noise``: inputs replaced by Gaussian noise of their shape (the ``control_noise`` ablation);
- fused grid: the M fused token maps are concatenated per position, ``(B, M·D, s, s)``, and mixed
  by a 1x1 convolution to ``D`` channels;
- :class:`~mango.models.heads.image_decoder.ImageDecoder` with ``k`` upsampling steps and tanh
  -> ``(B, 3, S, S)`` in [-1, 1].

Optional conditional PatchGAN (``gan``): the discriminator sees ``cat(inputs, image)``. Its two
losses are computed in :meth:`TranslationModel.adversarial_losses` so that one optimizer can
train both networks (the trainer has one optimizer and automatic optimisation):

- generator term ``L_G = BCE(D̄(x, G(x)), 1)`` where ``D̄`` is the discriminator evaluated with
  **detached parameters** (``torch.func.functional_call``): its gradient reaches the generator
  only;
- discriminator term ``L_D = ½ [BCE(D(x, y), 1) + BCE(D(x, G(x).detach()), 0)]``: its gradient
  reaches the discriminator only.

Minimising ``L_task + w · L_G + L_D`` with one optimizer is then a simultaneous
(not alternating, as in pix2pix) gradient step of both players.

References:
    Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017,
    arXiv 1611.07004 (L1 x 100 + PatchGAN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.discriminator import PatchGANDiscriminator
from mango.models.fusion import TOKEN_FUSIONS, TokenEmbedding, build_fusion
from mango.models.heads.image_decoder import ImageDecoder
from mango.models.missing import check_noise, noise_control, presence, zero_absent
from mango.models.task_model import TaskModel, TaskOutput

FUSIONS = (*TOKEN_FUSIONS, "single")


@dataclass
class TranslationOutput(TaskOutput):
    """The translated image ``(B, 3, S, S)`` in [-1, 1] with the flow's bits/dim and aux loss."""

    image: Tensor


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (works for batch size 1, unlike BatchNorm)."""
    return nn.GroupNorm(next(g for g in (8, 4, 2, 1) if channels % g == 0), channels)


class DomainEncoder(nn.Module):
    """``len(widths)`` stages of [3x3 conv stride 2, GroupNorm, ReLU, 3x3 conv, GroupNorm, ReLU].

    Example:
        >>> tuple(DomainEncoder(3, (8, 16, 16))(torch.zeros(2, 3, 32, 32)).shape)
        (2, 16, 4, 4)
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        if not widths:
            raise ValueError("DomainEncoder needs at least one stage width")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
                _norm(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                _norm(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TranslationModel(TaskModel):
    """Input domains -> target image, fused by MANGO or a baseline (see the module doc).

    Args:
        inputs: the input domains, in token order; ``batch[name]`` is ``(B, 3, S, S)``.
        image_size: ``S``; must be divisible by ``2^len(encoder_widths)``.
        fusion: one of :data:`FUSIONS`.
        dim: token channels ``D``.
        encoder_widths: channels of each encoder stage (one stride-2 stage each).
        decoder_width: channels of the decoder's first layer (halved per upsampling step).
        flow: keyword arguments of :class:`FlowFusion` (``blocks``, ``partitions``, ...).
        gan: ``None``, or ``{"ndf": int, "layers": int}`` to add a conditional PatchGAN.

    Raises:
        ConfigError: unknown fusion, fewer than 2 inputs for ``mango``, a size that does not
            divide, or a token grid under 2 tokens.

    Example:
        >>> model = TranslationModel(["reshading", "edge_texture"], 32, dim=8,
        ...                          encoder_widths=(8, 8, 8), decoder_width=8,
        ...                          flow={"blocks": 1, "coupling_hidden": 8})
        >>> image = torch.zeros(2, 3, 32, 32)
        >>> out = model({"reshading": image, "edge_texture": image})
        >>> tuple(out.image.shape), tuple(out.bits_per_dim.shape)
        ((2, 3, 32, 32), (2,))
    """

    def __init__(
        self,
        inputs: Sequence[str],
        image_size: int,
        fusion: str = "mango",
        dim: int = 128,
        encoder_widths: Sequence[int] = (64, 128, 256, 256),
        decoder_width: int = 256,
        flow: Mapping[str, Any] | None = None,
        gan: Mapping[str, int] | None = None,
        fusion_settings: Mapping[str, Any] | None = None,
        noise: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"model.fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
        if fusion not in ("concat", "single") and len(inputs) < 2:
            raise ConfigError(
                f"model.fusion: {fusion} fuses at least two data.inputs, got {list(inputs)} "
                "(use fusion: single for one input)"
            )
        steps = len(encoder_widths)
        if image_size % 2**steps:
            raise ConfigError(
                f"data.crop_size: {image_size} is not divisible by 2^{steps} "
                f"(model.encoder_widths has {steps} stride-2 stages)"
            )
        side = image_size // 2**steps
        if fusion == "mango" and side * side < 2:
            raise ConfigError(
                f"model.encoder_widths: {steps} stages leave a {side}x{side} token grid at size "
                f"{image_size}; the flow needs at least 2 tokens per input"
            )
        self.inputs = tuple(inputs)
        self.modalities = self.inputs[:1] if fusion == "single" else self.inputs
        self.side = side
        self.noise = check_noise(noise, self.modalities)
        self.encoders = nn.ModuleDict(
            {m: DomainEncoder(3, encoder_widths) for m in self.modalities}
        )
        self.embed = nn.ModuleDict(
            {m: TokenEmbedding(encoder_widths[-1], dim, side * side) for m in self.modalities}
        )
        self.fusion = build_fusion(
            "concat" if fusion == "single" else fusion,
            dim,
            [side * side] * len(self.modalities),
            (side, side),
            flow,
            fusion_settings,
        )
        self.mix = nn.Conv2d(dim * len(self.modalities), dim, 1)
        self.decoder = ImageDecoder(dim, 3, upsample_steps=steps, width=decoder_width)
        self.discriminator = (
            PatchGANDiscriminator(3 * len(self.inputs) + 3, gan["ndf"], gan["layers"])
            if gan is not None
            else None
        )

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-domain encoders."""
        return list(self.encoders.parameters())

    def forward(self, batch: Mapping[str, Any]) -> TranslationOutput:
        first = batch[self.modalities[0]]
        present = presence(batch, self.modalities, first.shape[0], first.device)
        tokens = [
            self.embed[m](
                self.encoders[m](
                    zero_absent(
                        noise_control(batch[m], m in self.noise),
                        None if present is None else present[:, i],
                    )
                )
            )
            for i, m in enumerate(self.modalities)
        ]
        fused = self.fusion(tokens, present=present)
        grid = torch.cat(fused.tokens, dim=-1)  # (B, s², M·D): concatenation per position
        grid = grid.transpose(1, 2).reshape(grid.shape[0], -1, self.side, self.side)
        image = self.decoder(self.mix(grid))
        return TranslationOutput(
            image=image, bits_per_dim=fused.bits_per_dim, aux_loss=fused.aux_loss
        )

    def adversarial_losses(self, batch: Mapping[str, Any], image: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_G, L_D)`` of the conditional PatchGAN for generated ``image`` (see the module doc).

        Raises:
            RuntimeError: the model was built without a discriminator.
        """
        if self.discriminator is None:
            raise RuntimeError("adversarial_losses needs a model built with gan settings")
        condition = torch.cat([batch[m] for m in self.inputs], dim=1)
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fake_logits = torch.func.functional_call(
            self.discriminator, frozen, (torch.cat([condition, image], dim=1),), strict=False
        )
        generator = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        real = self.discriminator(torch.cat([condition, batch["target"]], dim=1))
        fake = self.discriminator(torch.cat([condition, image.detach()], dim=1))
        discriminator = 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
        return generator, discriminator
