"""The Taskonomy task: multimodal image-to-image translation (inputs -> one target domain).

Config sections (``configs/taskonomy.yaml``, ``configs/taskonomy-smoke.yaml``):

- ``data``: ``root`` (or ``--data``); either ``pair`` (one of :data:`PAIRS`, the five tasks of
  the paper tables) or ``inputs`` (a list of domains) and ``target`` (one domain), or both when
  they agree (names may be canonical, old or short, see :mod:`~mango.tasks.translation.domains`;
  they are stored canonical); ``load_size`` / ``crop_size`` (training: resize, random crop, flip;
  evaluation: resize to ``crop_size``), ``flip``;
- ``model``: ``fusion`` (mango | concat | single | an attention baseline), ``noise``, ``dim``,
  ``encoder_widths`` (one stride-2 stage each, so the token grid is ``crop_size / 2^len``),
  ``decoder_width``;
- ``loss``: ``nll_weight`` (shared) and ``l1_weight`` (pix2pix: 100);
- ``loss_gan``: ``enabled`` (default off), ``weight``, ``ndf``, ``layers`` (conditional PatchGAN,
  trained with the generator's optimizer, see :mod:`mango.models.translation`);
- ``metrics``: ``inception`` (pytorch-fid Inception-v3 weights path: keys ``fid`` / ``kid``; else
  the offline MobileNetV2 stand-in: ``fid_mobilenet`` / ``kid_mobilenet``), ``fid`` (auto = only
  when the target is rgb, as in the paper tables).

Loss: ``l1_weight · mean |G(x) - y|`` (+ ``weight · L_G + L_D`` with the GAN). Metrics:
:class:`~mango.tasks.translation.metrics.TranslationMetrics`; the monitored key is ``psnr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from mango.config import DataSection, LossSettings, RunConfig, Section
from mango.errors import ConfigError
from mango.io import atomic_save
from mango.models.translation import FUSIONS, TranslationModel, TranslationOutput
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.translation.domains import canonical_domain

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


class TranslationModelSettings(Section):
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


def to_uint8(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8 (``round((x + 1) / 2 · 255)``, clamped).

    Example:
        >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1)).tolist()
        [[[0, 128, 255]]]
    """
    scaled = ((image.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(1, 2, 0).numpy()


class TaskonomyTask(Task):
    """Taskonomy subset (TokenFusion / CEN protocol): 1000 train / 500 val, inputs -> target."""

    name = "taskonomy"
    config_class = TaskonomyConfig
    monitor = "psnr"

    def __init__(self) -> None:
        self._cfg: Any = None
        self._model: TranslationModel | None = None

    def build_model(self, cfg: Any) -> nn.Module:
        m, gan = cfg.model, cfg.loss_gan
        # mango.train seeds the global generator from trainer.seed before building any model
        model = TranslationModel(
            cfg.data.inputs,
            cfg.data.crop_size,
            fusion=m.fusion,
            dim=m.dim,
            encoder_widths=m.encoder_widths,
            decoder_width=m.decoder_width,
            flow=cfg.flow.model_dump(),
            gan={"ndf": gan.ndf, "layers": gan.layers} if gan.enabled else None,
            fusion_settings=cfg.fusion.model_dump(),
            noise=m.noise,
        )
        self._cfg, self._model = cfg, model
        return model

    def dataset(self, cfg: Any, split: str) -> Any:
        from mango.tasks.translation.readers import TaskonomyPairs

        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        if cfg.data.root is None:
            raise ConfigError("data.root: no Taskonomy folder given (pass --data DIR)")
        return TaskonomyPairs(cfg.data.root, cfg.data.inputs, cfg.data.target, split)

    def transform(self, cfg: Any, train: bool) -> Transform:
        from mango.tasks.translation.transforms import EvalTransform, TrainTransform

        d = cfg.data
        return (
            TrainTransform(d.load_size, d.crop_size, d.flip)
            if train
            else EvalTransform(d.crop_size)
        )

    def loss(self, outputs: TranslationOutput, batch: Sample) -> Tensor:
        """``l1_weight · mean |G(x) - y|``, plus ``weight · L_G + L_D`` when the GAN is on."""
        cfg = self._cfg
        target = batch["target"].to(outputs.image.dtype)
        loss = cfg.loss.l1_weight * (outputs.image - target).abs().mean()
        if cfg.loss_gan.enabled and self._model is not None:
            generator, discriminator = self._model.adversarial_losses(batch, outputs.image)
            loss = loss + cfg.loss_gan.weight * generator + discriminator
        return loss

    def metric(self, cfg: Any) -> nn.Module:
        from mango.tasks.translation.metrics import TranslationMetrics

        m = cfg.metrics
        fid = m.fid == "on" or (m.fid == "auto" and cfg.data.target == "rgb")
        return TranslationMetrics(feature_model=m.inception, fid=fid)

    def update_metric(self, metric: nn.Module, outputs: TranslationOutput, batch: Sample) -> None:
        metric.update(outputs.image.float(), batch["target"].float())

    def write_predictions(
        self, cfg: Any, outputs: TranslationOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        """One PNG per sample, ``out_dir/<name>.png``: inputs | target | output, side by side."""
        written = []
        for i, name in enumerate(batch["name"]):
            panels = [batch[d][i] for d in cfg.data.inputs]
            panels += [batch["target"][i], outputs.image[i]]
            grid = np.concatenate([to_uint8(p) for p in panels], axis=1)
            path = Path(out_dir) / f"{name}.png"
            atomic_save(path, lambda f, grid=grid: Image.fromarray(grid).save(f, format="PNG"))
            written.append(path)
        return written

    def check_data(self, root: Path) -> CheckReport:
        from mango.tasks.translation.check import check_taskonomy

        return check_taskonomy(root)
