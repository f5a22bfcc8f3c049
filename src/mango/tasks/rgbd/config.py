"""The config sections of the RGB-D segmentation tasks (synthetic scenes, NYUDv2, SUN RGB-D)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mango.config import DataSection, ModelSection, RunConfig
from mango.models.segmentation import FUSIONS
from mango.tasks.rgbd.layouts import get_layout


class SegmentationModelSettings(ModelSection):
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


class SegmentationConfig(RunConfig):
    """A segmentation run: the shared model section; each task adds its ``data`` section."""

    model: SegmentationModelSettings = Field(default_factory=SegmentationModelSettings)


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
    shading: float = Field(
        0.0,
        ge=0,
        le=1,
        description="directional share of the light that shades RGB over the depth relief "
        "(a shape-from-shading cue; 0: flat colours, today's scenes)",
    )


class SyntheticConfig(SegmentationConfig):
    task: Literal["synthetic"] = "synthetic"
    data: SyntheticData = Field(default_factory=SyntheticData)


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


class RGBDConfig(SegmentationConfig):
    """NYUDv2 or SUN RGB-D on disk (``task`` names the layout)."""

    data: RGBDData = Field(default_factory=RGBDData)

    @model_validator(mode="after")
    def _record_depth(self) -> RGBDConfig:
        recorded = get_layout(self.task).depth_config()
        if self.data.depth and self.data.depth != recorded:
            raise ValueError(f"data.depth is fixed by the {self.task} layout: {recorded}")
        self.data.depth = recorded
        return self


class NYUDv2Config(RGBDConfig):
    task: Literal["nyudv2"] = "nyudv2"


class SUNRGBDConfig(RGBDConfig):
    task: Literal["sunrgbd"] = "sunrgbd"
