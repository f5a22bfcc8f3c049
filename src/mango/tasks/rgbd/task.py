"""Semantic segmentation tasks: the built-in synthetic RGB-D scenes, NYUDv2 and SUN RGB-D."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset

from mango.errors import ConfigError
from mango.io import atomic_save
from mango.models.segmentation import SegmentationFusionModel, SegmentationOutput
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.rgbd.config import (
    NYUDv2Config,
    RGBDConfig,
    SegmentationConfig,
    SUNRGBDConfig,
    SyntheticConfig,
)
from mango.tasks.rgbd.layouts import IGNORE_INDEX, get_layout
from mango.tasks.rgbd.transforms import IMAGENET_MEAN, IMAGENET_STD
from mango.tasks.transforms import RandomFlip

SegmentationConfigT = TypeVar("SegmentationConfigT", bound=SegmentationConfig)


def _build_model(
    cfg: SegmentationConfig, num_classes: int, image_size: tuple[int, int]
) -> SegmentationFusionModel:
    m = cfg.model
    channels = {"rgb": 3, "depth": 1}
    unknown = [name for name in m.modalities if name not in channels]
    if unknown:
        raise ConfigError(
            f"model.modalities: unknown modality {unknown[0]!r}; use rgb and/or depth"
        )
    return SegmentationFusionModel(
        m.modalities,
        channels,
        num_classes,
        image_size,
        encoder=m.encoder,
        fusion=m.fusion,
        fuse_stages=m.fuse_stages,
        dim=m.dim,
        flow=cfg.flow.model_dump(),
        fusion_settings=cfg.fusion.model_dump(),
        head_dim=m.head_dim,
        pretrained=m.pretrained,
        dropout=m.dropout,
        noise=m.noise,
    )


class _SegmentationTask(Task[SegmentationConfigT]):
    """Loss, metric and prediction writing shared by the segmentation tasks."""

    monitor = "miou"

    def class_names(self, cfg: SegmentationConfigT) -> list[str]:
        raise NotImplementedError

    def loss(self, outputs: SegmentationOutput, batch: Sample) -> Tensor:
        return F.cross_entropy(outputs.logits, batch["mask"], ignore_index=IGNORE_INDEX)

    def metric(self, cfg: SegmentationConfigT) -> nn.Module:
        from mango.tasks.rgbd.metrics import SegmentationMetrics

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
        self, cfg: SegmentationConfigT, outputs: SegmentationOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        from mango.tasks.rgbd.palette import colorize

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
            for path, image in (
                (out_dir / f"{name}.png", colour),
                (out_dir / f"{name}_panel.png", np.concatenate(panels, axis=1)),
            ):
                atomic_save(
                    path, lambda f, image=image: Image.fromarray(image).save(f, format="PNG")
                )
                written.append(path)
        return written


def protocol(scales: Sequence[float], flip: bool, window: str, **details: Any) -> dict[str, Any]:
    """``{"protocol": ...}``: how a segmentation result was evaluated, named as the peers name it.

    Example:
        >>> protocol([0.75, 1.0, 1.25], True, "whole image")["protocol"]["name"]
        'multi-scale (0.75, 1, 1.25) + flip'
    """
    scales = list(scales)
    name = (
        "single-scale"
        if scales == [1.0]
        else f"multi-scale ({', '.join(f'{s:g}' for s in scales)})"
    )
    name += " + flip" if flip else ""
    return {"protocol": {"name": name, "window": window, "scales": scales, "flip": flip, **details}}


# --------------------------------------------------------------------------- synthetic


class SyntheticTask(_SegmentationTask[SyntheticConfig]):
    """Segment synthetic RGB-D scenes whose classes need both colour and depth (``mango demo``)."""

    name = "synthetic"
    config_class = SyntheticConfig

    def class_names(self, cfg: SyntheticConfig) -> list[str]:
        from mango.data.synthetic import CLASS_NAMES

        return list(CLASS_NAMES)

    def build_model(self, cfg: SyntheticConfig) -> SegmentationFusionModel:
        return _build_model(cfg, len(self.class_names(cfg)), (cfg.data.size, cfg.data.size))

    def eval_settings(self, cfg: SyntheticConfig) -> dict[str, Any]:
        """A scene is the model's size: one forward on the whole scene, one scale, no flip."""
        return protocol([1.0], False, f"whole image {cfg.data.size}x{cfg.data.size}")

    def dataset(self, cfg: SyntheticConfig, split: str) -> Dataset[Sample]:
        from mango.data.synthetic import SyntheticScenes
        from mango.tasks.rgbd.data import NamedScenes

        counts = {
            "train": cfg.data.train_scenes,
            "val": cfg.data.val_scenes,
            "test": cfg.data.test_scenes,
        }
        if split not in counts:
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        return NamedScenes(
            SyntheticScenes(
                counts[split],
                split=split,
                size=cfg.data.size,
                seed=cfg.data.seed,
                misregistration=cfg.data.misregistration,
                shading=cfg.data.shading,
            ),
            split,
        )

    def transform(self, cfg: SyntheticConfig, train: bool) -> Transform:
        return RandomFlip(("rgb", "depth", "mask"), cfg.data.flip and train)

    def display_rgb(self, rgb: Tensor) -> np.ndarray:
        from mango.data.synthetic import display_rgb

        return (np.asarray(display_rgb(rgb)) * 255).clip(0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- NYUDv2 / SUN RGB-D


class _RGBDTask(_SegmentationTask[RGBDConfig]):
    """Shared by NYUDv2 and SUN RGB-D: readers, transforms, sliding-window multi-scale evaluation."""

    def class_names(self, cfg: RGBDConfig) -> list[str]:
        return list(get_layout(self.name).class_names)

    def build_model(self, cfg: RGBDConfig) -> SegmentationFusionModel:
        return _build_model(cfg, len(self.class_names(cfg)), tuple(cfg.data.crop_size))

    def _root(self, cfg: RGBDConfig) -> Path:
        if cfg.data.root is None:
            raise ConfigError(
                f"data.root: no dataset folder given for {self.name} (pass --data DIR)"
            )
        return Path(cfg.data.root)

    def dataset(self, cfg: RGBDConfig, split: str) -> Dataset[Sample]:
        from torch.utils.data import Subset

        from mango.tasks.rgbd.data import RGBDSegmentationDataset

        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        root = self._root(cfg)
        if split == "test":
            return RGBDSegmentationDataset(root, self.name, "test", max_items=cfg.data.max_items)
        full = RGBDSegmentationDataset(root, self.name, "train", max_items=cfg.data.max_items)
        held = int(round(len(full) * cfg.data.val_fraction))
        held = min(max(held, 1 if cfg.data.val_fraction > 0 else 0), len(full) - 1)
        order = np.random.default_rng(cfg.trainer.seed).permutation(len(full)).tolist()
        return Subset(full, sorted(order[:held]) if split == "val" else sorted(order[held:]))

    def transform(self, cfg: RGBDConfig, train: bool) -> Transform:
        from mango.tasks.rgbd.transforms import EvalTransform, TrainTransform

        d = cfg.data
        if train:
            return TrainTransform(d.crop_size, d.scale_range, d.flip, d.color_jitter)
        return EvalTransform(d.eval_size)

    def predict(
        self, model: SegmentationFusionModel, batch: Sample, cfg: RGBDConfig
    ) -> SegmentationOutput:
        """Sliding windows of the training crop over every scale (and flip) of the batch."""
        from mango.tasks.rgbd.inference import predict

        d = cfg.data
        classes = len(self.class_names(cfg))
        crop = (d.crop_size[0], d.crop_size[1])
        return predict(model, batch, classes, crop, d.eval_stride, d.eval_scales, d.eval_flip)

    def eval_settings(self, cfg: RGBDConfig) -> dict[str, Any]:
        """The protocol beside the numbers: sliding windows of the training crop, the scales,
        the flip and any resize of the images (docs/reproduce.md maps it to the peers')."""
        d = cfg.data
        height, width = d.crop_size
        return protocol(
            d.eval_scales,
            d.eval_flip,
            f"sliding {height}x{width}, stride {d.eval_stride:.3g} of the window",
            stride=d.eval_stride,
            crop_size=list(d.crop_size),
            eval_size=list(d.eval_size) if d.eval_size else None,
        )

    def check_data(self, root: Path) -> CheckReport:
        from mango.tasks.rgbd.check import check_segmentation

        return check_segmentation(self.name, root)


class NYUDv2Task(_RGBDTask):
    """NYUDv2 40-class RGB-D segmentation (795 train / 654 test)."""

    name = "nyudv2"
    config_class = NYUDv2Config


class SUNRGBDTask(_RGBDTask):
    """SUN RGB-D 37-class RGB-D segmentation (5285 train / 5050 test)."""

    name = "sunrgbd"
    config_class = SUNRGBDConfig
