"""Semantic segmentation tasks: the built-in synthetic RGB-D scenes, NYUDv2 and SUN RGB-D."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field, model_validator
from torch import Tensor, nn

from mango.config import DataSection, RunConfig, Section
from mango.errors import ConfigError
from mango.io import atomic_save
from mango.models.segmentation import FUSIONS, SegmentationFusionModel, SegmentationOutput
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.segmentation.layouts import IGNORE_INDEX, get_layout
from mango.tasks.segmentation.transforms import IMAGENET_MEAN, IMAGENET_STD


class SegmentationModelSettings(Section):
    """Model section shared by all segmentation tasks."""

    modalities: list[str] = Field(default_factory=lambda: ["rgb", "depth"], min_length=1)
    fusion: Literal[FUSIONS] = Field(  # type: ignore[valid-type]
        "mango", description="mango, concat, single, or an attention baseline (docs/baselines.md)"
    )
    noise: list[str] = Field(
        default_factory=list,
        description="modalities replaced by Gaussian noise of their shape (control_noise row)",
    )
    encoder: str = "conv-small"
    pretrained: str | None = Field(
        None, description="local MiT weights (HF folder/file or mit_bX.pth)"
    )
    fuse_stages: list[int] = Field(
        default_factory=lambda: [2, 3], description="encoder stages fused by the flow (0..3)"
    )
    dim: int = Field(64, ge=2, description="token channels D inside the flow")
    head_dim: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)


def _build_model(
    cfg: Any, num_classes: int, image_size: tuple[int, int]
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


class SyntheticData(DataSection):
    """Built-in procedurally generated RGB-D scenes (no files; ``root`` is ignored)."""

    root: str | None = None
    size: int = Field(64, ge=16, description="scene side in pixels (the flow is built for it)")
    train_scenes: int = Field(2000, ge=1)
    val_scenes: int = Field(200, ge=1)
    test_scenes: int = Field(200, ge=1)
    seed: int = 0
    flip: bool = True
    misregistration: float = Field(
        0.125,
        ge=0,
        le=0.5,
        description="depth shifted against RGB by up to this fraction of the side (0: aligned)",
    )


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

    def eval_settings(self, cfg: Any) -> dict[str, Any]:
        """A scene is the model's size: one forward on the whole scene, one scale, no flip."""
        return protocol([1.0], False, f"whole image {cfg.data.size}x{cfg.data.size}")

    def dataset(self, cfg: Any, split: str) -> Any:
        from mango.data.synthetic import SyntheticScenes

        counts = {
            "train": cfg.data.train_scenes,
            "val": cfg.data.val_scenes,
            "test": cfg.data.test_scenes,
        }
        if split not in counts:
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        return _Named(
            SyntheticScenes(
                counts[split],
                split=split,
                size=cfg.data.size,
                seed=cfg.data.seed,
                misregistration=cfg.data.misregistration,
            ),
            split,
        )

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


# --------------------------------------------------------------------------- NYUDv2 / SUN RGB-D


class RGBDData(DataSection):
    """An RGB-D segmentation dataset on disk (layouts in docs/data.md)."""

    root: str | None = Field(None, description="dataset folder (or pass --data)")
    crop_size: tuple[int, int] = Field(
        (256, 256), description="training crop; the flow is built for it"
    )
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    color_jitter: float = Field(0.2, ge=0)
    eval_size: tuple[int, int] | None = Field(
        None, description="resize images for evaluation (SUN: 480x480)"
    )
    eval_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    eval_flip: bool = False
    eval_stride: float = Field(
        2 / 3, gt=0, le=1, description="sliding-window stride, fraction of the crop"
    )
    val_fraction: float = Field(
        0.05, ge=0, lt=1, description="train images held out for validation"
    )
    max_items: int | None = Field(
        None, ge=1, description="use only the first N images of each list"
    )
    depth: dict[str, Any] = Field(
        default_factory=dict, description="depth normalisation (set by the layout)"
    )


class _RGBDConfig(RunConfig):
    data: RGBDData = Field(default_factory=RGBDData)
    model: SegmentationModelSettings = Field(default_factory=SegmentationModelSettings)

    @model_validator(mode="after")
    def _record_depth(self) -> _RGBDConfig:
        recorded = get_layout(self.task).depth_config()
        if self.data.depth and self.data.depth != recorded:
            raise ValueError(f"data.depth is fixed by the {self.task} layout: {recorded}")
        self.data.depth = recorded
        return self


class NYUDv2Config(_RGBDConfig):
    task: Literal["nyudv2"] = "nyudv2"


class SUNRGBDConfig(_RGBDConfig):
    task: Literal["sunrgbd"] = "sunrgbd"


class _RGBDTask(_SegmentationTask):
    """Shared by NYUDv2 and SUN RGB-D: readers, transforms, sliding-window multi-scale evaluation."""

    def class_names(self, cfg: Any) -> list[str]:
        return list(get_layout(self.name).class_names)

    def build_model(self, cfg: Any) -> nn.Module:
        return _build_model(cfg, len(self.class_names(cfg)), tuple(cfg.data.crop_size))

    def _root(self, cfg: Any) -> Path:
        if cfg.data.root is None:
            raise ConfigError(
                f"data.root: no dataset folder given for {self.name} (pass --data DIR)"
            )
        return Path(cfg.data.root)

    def dataset(self, cfg: Any, split: str) -> Any:
        from torch.utils.data import Subset

        from mango.tasks.segmentation.readers import RGBDSegmentationDataset

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

    def transform(self, cfg: Any, train: bool) -> Transform:
        from mango.tasks.segmentation.transforms import EvalTransform, TrainTransform

        d = cfg.data
        if train:
            return TrainTransform(d.crop_size, d.scale_range, d.flip, d.color_jitter)
        return EvalTransform(d.eval_size)

    def predict(self, model: nn.Module, batch: Sample, cfg: Any) -> SegmentationOutput:
        from mango.tasks.segmentation.inference import predict_logits

        bits: list[Tensor] = []

        def logits_fn(inputs: Sample) -> Tensor:
            logits, b = sliding_window_logits(
                model, inputs, tuple(cfg.data.crop_size), cfg.data.eval_stride
            )
            if b is not None:
                bits.append(b)
            return logits

        logits = predict_logits(
            logits_fn, batch, len(self.class_names(cfg)), cfg.data.eval_scales, cfg.data.eval_flip
        )
        return SegmentationOutput(logits, torch.stack(bits).mean(0) if bits else None)

    def eval_settings(self, cfg: Any) -> dict[str, Any]:
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
        from mango.tasks.segmentation.check import check_segmentation

        return check_segmentation(self.name, root)


def sliding_window_logits(
    model: nn.Module, inputs: Sample, crop: tuple[int, int], stride: float
) -> tuple[Tensor, Tensor | None]:
    """Logits of any-size images from a model built for ``crop``: overlapping windows, averaged.

    Images smaller than the crop are zero-padded (the padding is cropped away again). Returns the
    logits (B, C, H, W) and the mean flow bits/dim over windows (``None`` without a flow).
    """
    image = inputs[model.modalities[0]]
    height, width = image.shape[-2:]
    pad_h, pad_w = max(crop[0] - height, 0), max(crop[1] - width, 0)
    padded = {m: F.pad(inputs[m], (0, pad_w, 0, pad_h)) for m in model.modalities}
    full_h, full_w = height + pad_h, width + pad_w
    step_h, step_w = max(1, int(crop[0] * stride)), max(1, int(crop[1] * stride))
    tops = sorted({*range(0, full_h - crop[0], step_h), full_h - crop[0]})
    lefts = sorted({*range(0, full_w - crop[1], step_w), full_w - crop[1]})
    logits = counts = None
    bits = []
    for top in tops:
        for left in lefts:
            window = {
                m: t[..., top : top + crop[0], left : left + crop[1]] for m, t in padded.items()
            }
            if "present" in inputs:
                window["present"] = inputs["present"]
            out = model(window)
            if logits is None:
                logits = out.logits.new_zeros(out.logits.shape[:2] + (full_h, full_w))
                counts = out.logits.new_zeros(1, 1, full_h, full_w)
            logits[..., top : top + crop[0], left : left + crop[1]] += out.logits
            counts[..., top : top + crop[0], left : left + crop[1]] += 1
            if out.bits_per_dim is not None:
                bits.append(out.bits_per_dim)
    assert logits is not None and counts is not None
    logits = (logits / counts)[..., :height, :width]
    return logits, torch.stack(bits).mean(0) if bits else None


class NYUDv2Task(_RGBDTask):
    """NYUDv2 40-class RGB-D segmentation (795 train / 654 test)."""

    name = "nyudv2"
    config_class = NYUDv2Config


class SUNRGBDTask(_RGBDTask):
    """SUN RGB-D 37-class RGB-D segmentation (5285 train / 5050 test)."""

    name = "sunrgbd"
    config_class = SUNRGBDConfig
