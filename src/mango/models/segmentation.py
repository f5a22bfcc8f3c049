"""Multimodal semantic segmentation: per-modality pyramid encoders, fusion, SegFormer decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.models.encoders.pyramid import build_pyramid_encoder
from mango.models.fusion import (
    TOKEN_FUSIONS,
    Fusion,
    FusionOutput,
    TokenEmbedding,
    build_fusion,
)
from mango.models.fusion.filler import ModalityFiller
from mango.models.heads.segformer import SegFormerHead
from mango.models.missing import check_noise, noise_control, presence, zero_absent
from mango.models.task_model import TaskModel, TaskOutput

FUSIONS = (*TOKEN_FUSIONS, "single")


@dataclass
class SegmentationOutput(TaskOutput):
    """Logits ``(B, num_classes, H, W)`` at the input resolution; ``bits_per_dim`` is the mean
    over the flow-fused stages and ``aux_loss`` the sum over stages."""

    logits: Tensor


class StageFusion(nn.Module):
    """Fuse one pyramid stage of M modalities into a single feature map ``(B, C, h, w)``.

    ``concat``: the modalities' maps concatenated per position -> 1x1 conv to ``C``.
    ``single``: the one modality's map unchanged.
    Every other ``mode`` (``mango`` and the attention baselines): tokens (linear to ``dim`` +
    position/modality embeddings) -> the fusion :func:`build_fusion` makes -> fused tokens per
    modality -> concatenated per position -> 1x1 conv back to ``C``. So all token fusions share
    the embedding and the read-out, and differ only inside the fusion.

    A ``concat`` stage that is one of the model's fused stages (``fills``) holds a
    :class:`~mango.models.fusion.filler.ModalityFiller` over its feature maps read as tokens
    ``(B, h·w, C)``, so ``mean``/``regress`` fills act at the fused stages of every fusion (a
    token fusion's own filler does it for the others).
    """

    def __init__(
        self,
        mode: str,
        channels: int,
        modalities: int,
        grid: tuple[int, int],
        dim: int,
        flow: Mapping[str, Any],
        settings: Mapping[str, Any] | None = None,
        fills: bool = False,
    ) -> None:
        super().__init__()
        self.mode, self.grid = mode, grid
        length = grid[0] * grid[1]
        self.fusion: Fusion | None = None
        self.filler: ModalityFiller | None = None
        if mode == "concat":
            self.out: nn.Module = nn.Conv2d(modalities * channels, channels, 1)
            if fills and modalities > 1:
                self.filler = ModalityFiller(channels, [length] * modalities)
        elif mode == "single":
            self.out = nn.Identity()
        else:
            self.embed = nn.ModuleList(
                TokenEmbedding(channels, dim, length) for _ in range(modalities)
            )
            self.fusion = build_fusion(mode, dim, [length] * modalities, grid, flow, settings)
            self.out = nn.Conv2d(modalities * dim, channels, 1)

    def forward(
        self, features: Sequence[Tensor], present: Tensor | None = None
    ) -> tuple[Tensor, FusionOutput | None]:
        """The fused map ``(B, C, h, w)`` and the token fusion's output (its bits/dim and extra
        loss; for ``concat``/``single`` only the filler's imputer loss in training, else
        ``None``); ``present`` ``(B, M)`` lets the filler fill and a flow impute."""
        if self.fusion is None:
            if self.filler is None:
                return self.out(torch.cat(list(features), dim=1)), None
            tokens = [f.flatten(2).transpose(1, 2) for f in features]
            tokens, loss = self.filler(tokens, present)
            maps = [
                t.transpose(1, 2).reshape(f.shape) for t, f in zip(tokens, features, strict=True)
            ]
            extra = None if loss is None else FusionOutput([], aux_loss=loss)
            return self.out(torch.cat(maps, dim=1)), extra
        tokens = [embed(f) for embed, f in zip(self.embed, features, strict=True)]
        fused = self.fusion(tokens, present=present)
        b, (h, w) = features[0].shape[0], self.grid
        maps = [t.transpose(1, 2).reshape(b, -1, h, w) for t in fused.tokens]
        return self.out(torch.cat(maps, dim=1)), fused


class SegmentationFusionModel(TaskModel):
    """RGB-D (or any multi-input) segmentation with fusion at chosen encoder stages.

    Each modality has its own pyramid encoder (4 stages). At the stages in ``fuse_stages`` the
    modalities are fused by ``fusion`` (``mango``, ``concat`` or an attention baseline of
    :data:`~mango.models.fusion.TOKEN_FUSIONS`, built with ``fusion_settings``); the other
    stages are fused by concatenation + 1x1 conv. A SegFormer all-MLP decoder maps the fused
    pyramid to logits, upsampled to the input size. The modalities in ``noise`` get Gaussian
    noise of their input's shape instead of their input, in training and test (the
    ``control_noise`` ablation). The flow is built for ``image_size``: inputs must have that
    size (use sliding windows for larger images). ``single`` uses only the first modality.

    Absent modalities (``inputs["present"]``, :mod:`mango.models.missing`): their input is
    zeroed for the absent samples (the zero rule, used by every stage); at the ``fuse_stages``
    their tokens may instead be the training mean or the imputer's prediction
    (``filling(model, "mean" | "regress")``, for every fusion), or, at flow-fused stages, the
    flow's completion (``filling(model, "impute")``).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        in_channels: Mapping[str, int],
        num_classes: int,
        image_size: tuple[int, int],
        encoder: str = "conv-small",
        fusion: str = "mango",
        fuse_stages: Sequence[int] = (2, 3),
        dim: int = 64,
        flow: Mapping[str, Any] | None = None,
        fusion_settings: Mapping[str, Any] | None = None,
        head_dim: int = 128,
        pretrained: str | None = None,
        dropout: float = 0.1,
        noise: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"model.fusion: expected one of {FUSIONS}, got {fusion!r}")
        if fusion == "single" and len(modalities) != 1:
            raise ConfigError(
                f"model.modalities: fusion 'single' takes one modality, got {list(modalities)}"
            )
        if fusion != "single" and len(modalities) < 2:
            raise ConfigError(
                f"model.modalities: fusion {fusion!r} needs >= 2 modalities, got {list(modalities)}"
            )
        bad_stages = [s for s in fuse_stages if s not in range(4)]
        if bad_stages:
            raise ConfigError(f"model.fuse_stages: stages are 0..3, got {list(fuse_stages)}")
        self.modalities = list(modalities)
        self.noise = check_noise(noise, self.modalities)
        self.image_size = tuple(image_size)
        self.encoders = nn.ModuleDict(
            {m: build_pyramid_encoder(encoder, in_channels[m], pretrained) for m in self.modalities}
        )
        first = self.encoders[self.modalities[0]]
        channels, strides = first.out_channels, first.strides
        stages = []
        for s, (c, stride) in enumerate(zip(channels, strides, strict=True)):
            grid = (self.image_size[0] // stride, self.image_size[1] // stride)
            mode = fusion if (s in fuse_stages or fusion == "single") else "concat"
            fills = s in fuse_stages
            stages.append(
                StageFusion(
                    mode, c, len(self.modalities), grid, dim, flow or {}, fusion_settings, fills
                )
            )
        self.stages = nn.ModuleList(stages)
        self.head = SegFormerHead(channels, head_dim, num_classes, dropout=dropout)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters (trained with the backbone learning rate)."""
        return list(self.encoders.parameters())

    def flow_tokens(self, inputs: Mapping[str, Tensor], stage: int) -> Tensor:
        """The joint tokens that stage ``stage``'s flow sees, (B, L, D) (for inspection)."""
        fusion = self.stages[stage]
        if fusion.fusion is None or not fusion.fusion.has_density:
            raise ValueError(f"stage {stage} is not fused by a flow")
        features = [self.encoders[m](inputs[m])[stage] for m in self.modalities]
        return torch.cat([embed(f) for embed, f in zip(fusion.embed, features, strict=True)], dim=1)

    def forward(self, inputs: Mapping[str, Tensor]) -> SegmentationOutput:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(
                f"batch is missing modality {missing[0]!r} (model uses {self.modalities})"
            )
        size = inputs[self.modalities[0]].shape[-2:]
        if tuple(size) != self.image_size:
            raise ValueError(
                f"input size {tuple(size)} differs from the model's image_size {self.image_size}"
            )
        first = inputs[self.modalities[0]]
        present = presence(inputs, self.modalities, first.shape[0], first.device)
        pyramids = [
            self.encoders[m](
                zero_absent(
                    noise_control(inputs[m], m in self.noise),
                    None if present is None else present[:, i],
                )
            )
            for i, m in enumerate(self.modalities)
        ]
        maps, fused = zip(
            *(stage([p[s] for p in pyramids], present) for s, stage in enumerate(self.stages)),
            strict=True,
        )
        bits = [out.bits_per_dim for out in fused if out and out.bits_per_dim is not None]
        aux = [out.aux_loss for out in fused if out and out.aux_loss is not None]
        logits = self.head(list(maps))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return SegmentationOutput(
            logits=logits,
            bits_per_dim=torch.stack(bits).mean(0) if bits else None,
            aux_loss=sum(aux) if aux else None,
        )
