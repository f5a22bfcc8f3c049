"""The config sections of the Taskonomy task (``configs/taskonomy.yaml``; see :mod:`.task`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mango.config import DataSection, LossSettings, ModelSection, RunConfig, Section
from mango.errors import ConfigError
from mango.models.translation import FUSIONS
from mango.tasks.taskonomy.domains import canonical_domain

#: the five tasks of the paper tables: name -> (inputs, target), short domain names
PAIRS: dict[str, tuple[tuple[str, ...], str]] = {
    "shade_texture_to_rgb": (("shade", "texture"), "rgb"),
    "depth_normal_to_rgb": (("depth", "normal"), "rgb"),
    "rgb_shade_to_normal": (("rgb", "shade"), "normal"),
    "rgb_normal_to_shade": (("rgb", "normal"), "shade"),
    "rgb_edge_to_depth": (("rgb", "edge"), "depth"),
}


def _conflict(message: str) -> PydanticCustomError:
    return PydanticCustomError("taskonomy_data", message)


class TaskonomyData(DataSection):
    """A Taskonomy translation folder (docs/data.md) and the domains translated."""

    root: str | None = Field(None, description="dataset folder (or pass --data)")
    pair: Literal[tuple(PAIRS)] | None = Field(  # type: ignore[valid-type]
        None, description="one of the paper's five tasks (sets inputs and target)"
    )
    inputs: list[str] | None = Field(None, min_length=1, description="input domains")
    target: str | None = Field(None, description="target domain")
    load_size: int = Field(286, ge=1, description="training: resize to this square first")
    crop_size: int = Field(256, ge=1, description="training crop and evaluation size")
    flip: bool = Field(True, description="random horizontal flips in training")

    @model_validator(mode="after")
    def _resolve(self) -> TaskonomyData:
        def canonical(field: str, name: str) -> str:
            try:
                return canonical_domain(name)
            except ConfigError as error:
                raise _conflict(f"data.{field}: {error}") from None

        inputs = [canonical("inputs", n) for n in self.inputs] if self.inputs else None
        target = canonical("target", self.target) if self.target else None
        if self.pair is not None:
            pair_inputs, pair_target = PAIRS[self.pair]
            expected = [canonical_domain(n) for n in pair_inputs]
            if inputs is not None and inputs != expected:
                raise _conflict(
                    f"data.inputs {inputs} conflicts with data.pair {self.pair!r} "
                    f"(inputs {expected}); remove one of them"
                )
            if target is not None and target != canonical_domain(pair_target):
                raise _conflict(
                    f"data.target {target!r} conflicts with data.pair {self.pair!r} "
                    f"(target {canonical_domain(pair_target)!r}); remove one of them"
                )
            inputs, target = expected, canonical_domain(pair_target)
        if inputs is None or target is None:
            raise _conflict(
                f"data.inputs / data.target: give both, or data.pair (one of {', '.join(PAIRS)})"
            )
        if len(set(inputs)) != len(inputs):
            raise _conflict(f"data.inputs: a domain is listed twice ({', '.join(inputs)})")
        if target in inputs:
            raise _conflict(f"data.target: {target!r} is also an input")
        if self.crop_size > self.load_size:
            raise _conflict(
                f"data.crop_size: {self.crop_size} exceeds data.load_size {self.load_size}"
            )
        self.inputs, self.target = inputs, target
        return self


class TranslationModelSettings(ModelSection):
    """The translation network: per-domain encoders, fusion, decoder."""

    fusion: Literal[FUSIONS] = Field(  # type: ignore[valid-type]
        "mango", description="mango, concat, single, or an attention baseline (docs/baselines.md)"
    )
    noise: list[str] = Field(
        default_factory=list,
        description="inputs replaced by Gaussian noise of their shape (control_noise row)",
    )
    dim: int = Field(128, ge=2, description="token channels D inside the fusion")
    encoder_widths: list[int] = Field(
        default_factory=lambda: [64, 128, 256, 256],
        min_length=1,
        description="channels per stride-2 encoder stage (token grid = crop_size / 2^len)",
    )
    decoder_width: int = Field(256, ge=2)


class TranslationLoss(LossSettings):
    l1_weight: float = Field(100.0, ge=0, description="pix2pix λ: task loss = λ · L1")


class GANSettings(Section):
    """Conditional PatchGAN (pix2pix); off by default."""

    enabled: bool = False
    weight: float = Field(1.0, ge=0, description="weight of the generator's adversarial term")
    ndf: int = Field(64, ge=1, description="discriminator width")
    layers: int = Field(3, ge=1, description="3 = the 70x70 PatchGAN")


class TranslationMetricSettings(Section):
    inception: str | None = Field(
        None, description="pytorch-fid Inception-v3 weights (.pth): fid / kid; else MobileNetV2"
    )
    fid: Literal["auto", "on", "off"] = Field(
        "auto", description="FID / KID: auto = only for an rgb target (as the paper tables)"
    )


class TaskonomyConfig(RunConfig):
    task: Literal["taskonomy"] = "taskonomy"
    data: TaskonomyData
    model: TranslationModelSettings = Field(default_factory=TranslationModelSettings)
    loss: TranslationLoss = Field(default_factory=TranslationLoss)
    loss_gan: GANSettings = Field(default_factory=GANSettings)
    metrics: TranslationMetricSettings = Field(default_factory=TranslationMetricSettings)
