"""Semantic segmentation tasks: the built-in synthetic RGB-D scenes, NYUDv2 and SUN RGB-D."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from torch import Tensor, nn

from mango.config import RunConfig, Section
from mango.errors import ConfigError
from mango.io import atomic_save
from mango.models.segmentation import SegmentationFusionModel, SegmentationOutput
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModelSettings(Section):
    """Model section shared by all segmentation tasks."""

    modalities: list[str] = Field(default_factory=lambda: ["rgb", "depth"], min_length=1)
    fusion: Literal["mango", "concat", "single"] = "mango"
    encoder: str = "conv-small"
    pretrained: str | None = Field(None, description="local MiT weights (HF folder/file or mit_bX.pth)")
    fuse_stages: list[int] = Field(default_factory=lambda: [2, 3], description="encoder stages fused by the flow (0..3)")
    dim: int = Field(64, ge=2, description="token channels D inside the flow")
    head_dim: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)


def _build_model(cfg: Any, num_classes: int, image_size: tuple[int, int]) -> SegmentationFusionModel:
    m = cfg.model
    channels = {"rgb": 3, "depth": 1}
    unknown = [name for name in m.modalities if name not in channels]
    if unknown:
        raise ConfigError(f"model.modalities: unknown modality {unknown[0]!r}; use rgb and/or depth")
    return SegmentationFusionModel(
        m.modalities, channels, num_classes, image_size, encoder=m.encoder, fusion=m.fusion,
        fuse_stages=m.fuse_stages, dim=m.dim, flow=cfg.flow.model_dump(), head_dim=m.head_dim,
        pretrained=m.pretrained, dropout=m.dropout,
    )


class _SegmentationTask(Task):
    """Loss, metric and prediction writing shared by the segmentation tasks."""

    monitor = "miou"

    def class_names(self, cfg: Any) -> list[str]:
        raise NotImplementedError

    def loss(self, outputs: SegmentationOutput, batch: Sample) -> Tensor:
        return F.cross_entropy(outputs.logits, batch["mask"], ignore_index=IGNORE_INDEX)

    def metric(self, cfg: Any) -> nn.Module:
        from mango.tasks.segmentation.metrics import SegmentationMetrics

        names = self.class_names(cfg)
        return SegmentationMetrics(len(names), names, ignore_index=IGNORE_INDEX)

    def update_metric(self, metric: nn.Module, outputs: SegmentationOutput, batch: Sample) -> None:
        metric.update(outputs.logits.argmax(1), batch["mask"])

    def display_rgb(self, rgb: Tensor) -> np.ndarray:
        """(3, H, W) normalised RGB -> (H, W, 3) uint8 for pictures."""
        mean = torch.tensor(IMAGENET_MEAN, device=rgb.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=rgb.device)[:, None, None]
        return ((rgb * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()

    def write_predictions(
        self, cfg: Any, outputs: SegmentationOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        from mango.tasks.segmentation.palette import colorize

        written = []
        predictions = outputs.logits.argmax(1).cpu().numpy()
        for i, name in enumerate(batch["name"]):
            colour = colorize(predictions[i])
            panels = []
            if "rgb" in batch:
                panels.append(self.display_rgb(batch["rgb"][i]))
            if "depth" in batch:
                d = batch["depth"][i, 0].float().cpu().numpy()
                d = (d - d.min()) / max(float(d.max() - d.min()), 1e-8)
                panels.append(np.repeat((d * 255).astype(np.uint8)[..., None], 3, axis=2))
            panels.append(colour)
            for path, image in ((out_dir / f"{name}.png", colour), (out_dir / f"{name}_panel.png", np.concatenate(panels, axis=1))):
                atomic_save(path, lambda f, image=image: Image.fromarray(image).save(f, format="PNG"))
                written.append(path)
        return written


# --------------------------------------------------------------------------- synthetic


class SyntheticData(Section):
    """Built-in procedurally generated RGB-D scenes (no files; ``root`` is ignored)."""

    root: str | None = None
    size: int = Field(64, ge=16, description="scene side in pixels (the flow is built for it)")
    train_scenes: int = Field(2000, ge=1)
    val_scenes: int = Field(200, ge=1)
    test_scenes: int = Field(200, ge=1)
    seed: int = 0
    flip: bool = True


class SyntheticConfig(RunConfig):
    task: Literal["synthetic"] = "synthetic"
    data: SyntheticData = Field(default_factory=SyntheticData)
    model: SegmentationModelSettings = Field(default_factory=SegmentationModelSettings)


def _flip_transform(flip: bool) -> Transform:
    def apply(sample: Sample, generator: torch.Generator | None) -> Sample:
        if flip and generator is not None and torch.rand((), generator=generator) < 0.5:
            sample = dict(sample)
            for key in ("rgb", "depth", "mask"):
                sample[key] = sample[key].flip(-1)
        return sample

    return apply


class SyntheticTask(_SegmentationTask):
    """Segment synthetic RGB-D scenes whose classes need both colour and depth (``mango demo``)."""

    name = "synthetic"
    config_class = SyntheticConfig

    def class_names(self, cfg: Any) -> list[str]:
        from mango.data.synthetic import CLASS_NAMES

        return list(CLASS_NAMES)

    def build_model(self, cfg: Any) -> nn.Module:
        return _build_model(cfg, len(self.class_names(cfg)), (cfg.data.size, cfg.data.size))

    def dataset(self, cfg: Any, split: str) -> Any:
        from mango.data.synthetic import SyntheticScenes

        counts = {"train": cfg.data.train_scenes, "val": cfg.data.val_scenes, "test": cfg.data.test_scenes}
        if split not in counts:
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        return _Named(SyntheticScenes(counts[split], split=split, size=cfg.data.size, seed=cfg.data.seed), split)

    def transform(self, cfg: Any, train: bool) -> Transform:
        return _flip_transform(cfg.data.flip and train)

    def display_rgb(self, rgb: Tensor) -> np.ndarray:
        from mango.data.synthetic import display_rgb

        return (np.asarray(display_rgb(rgb)) * 255).clip(0, 255).astype(np.uint8)


class _Named(torch.utils.data.Dataset):
    """Add a ``name`` (``<split>_<index>``) to every sample of a dataset."""

    def __init__(self, base: Any, split: str) -> None:
        self.base, self.split = base, split

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        return {**self.base[index], "name": f"{self.split}_{index:05d}"}
