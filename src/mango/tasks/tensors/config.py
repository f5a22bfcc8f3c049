"""The config sections of the ``tensors`` task (``configs/tensors-smoke.yaml``; see :mod:`.task`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mango.config import DataSection, ModelSection, RunConfig
from mango.models.tensors import FUSIONS


class TensorsData(DataSection):
    """A folder of ``train.npz``, ``test.npz`` and optionally ``val.npz``."""

    root: str | None = Field(None, description="dataset folder (or pass --data)")
    modalities: list[str] | None = Field(
        None, min_length=2, description="arrays to fuse (default: all but label and id)"
    )
    target: Literal["multiclass", "multilabel"] | None = Field(
        None, description="inferred from the shape of label when absent"
    )
    classes: int | None = Field(None, ge=2, description="multi-class: K (default: max label + 1)")
    class_names: list[str] | None = Field(None, description="names of the classes or labels")
    vector_tokens: int = Field(4, ge=1, description="tokens a (N, C) vector is split into")
    tokens: dict[str, int] = Field(
        default_factory=dict, description="per-modality override of vector_tokens"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="train samples held out for validation without val.npz"
    )
    standardize: bool = Field(True, description="standardise features with train statistics")

    @model_validator(mode="after")
    def _positive_tokens(self) -> TensorsData:
        for name, count in self.tokens.items():
            if count < 1:
                raise ValueError(f"data.tokens.{name} must be >= 1, got {count}")
        return self


class TensorsModelSettings(ModelSection):
    """Embeddings, fusion mode and head."""

    fusion: Literal[FUSIONS] = Field(  # type: ignore[valid-type]
        "mango", description="mango, concat, late, single, or an attention baseline"
    )
    readout: Literal["flatten", "mean"] = Field(
        "flatten", description="fused tokens -> head: all tokens flattened, or a mean per modality"
    )
    noise: list[str] = Field(
        default_factory=list,
        description="modalities replaced by Gaussian noise of their shape (control_noise row)",
    )
    modalities: list[str] | None = Field(
        None, min_length=1, description="modalities used (default: data.modalities)"
    )
    dim: int = Field(64, ge=2, description="token channels D inside the fusion")
    head_hidden: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: predict p > threshold")


class TensorsConfig(RunConfig):
    task: Literal["tensors"] = "tensors"
    data: TensorsData = Field(default_factory=TensorsData)
    model: TensorsModelSettings = Field(default_factory=TensorsModelSettings)
