"""The config sections of the MM-IMDb task (``configs/mmimdb.yaml``; see :mod:`.task`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mango.config import DataSection, ModelSection, RunConfig
from mango.models.classification import FUSIONS


class MMIMDbData(DataSection):
    """An MM-IMDb folder in either release format (docs/data.md)."""

    root: str | None = Field(None, description="dataset folder (or pass --data)")
    image_size: int = Field(224, ge=1, description="posters are resized to image_size x image_size")
    strict_sizes: bool = Field(True, description="require the published split sizes")
    max_text_tokens: int = Field(128, ge=2, description="plots padded/truncated to T tokens")
    flip: bool = Field(True, description="random horizontal poster flips in training")


class GenreModelSettings(ModelSection):
    """The classifier: encoders, fusion mode and head."""

    fusion: Literal[FUSIONS] = Field(  # type: ignore[valid-type]
        "mango", description="mango, concat, late, image, text, or an attention baseline"
    )
    noise: list[str] = Field(
        default_factory=list,
        description="modalities whose encoder features become Gaussian noise (control_noise)",
    )
    dim: int = Field(128, ge=2, description="token channels D inside the fusion")
    head_hidden: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)
    train_image_encoder: bool = False
    train_text_encoder: bool = False
    image_weights: str | None = Field(
        None, description="torchvision MobileNetV2 .pth (default: the offline package)"
    )
    text_encoder: str | None = Field(
        None, description="local transformers encoder folder (default: all-MiniLM-L6-v2)"
    )
    class_weights: Literal["none", "balanced"] = "none"
    threshold: float = Field(
        0.5, gt=0, lt=1, description="probability above which a genre is predicted"
    )
    tune_threshold: bool = Field(
        False, description="choose the threshold with the best micro-F1 on the dev split at eval"
    )


class MMIMDbConfig(RunConfig):
    task: Literal["mmimdb"] = "mmimdb"
    data: MMIMDbData = Field(default_factory=MMIMDbData)
    model: GenreModelSettings = Field(default_factory=GenreModelSettings)
