"""The Taskonomy task: multimodal image-to-image translation (inputs -> one target domain).

Config sections (``configs/taskonomy.yaml``, ``configs/taskonomy-smoke.yaml``):

- ``data``: ``root`` (or ``--data``); either ``pair`` (one of :data:`~mango.tasks.taskonomy.config.PAIRS`, the five tasks of
  the paper tables) or ``inputs`` (a list of domains) and ``target`` (one domain), or both when
  they agree (names may be canonical, old or short, see :mod:`~mango.tasks.taskonomy.domains`;
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
:class:`~mango.tasks.taskonomy.metrics.TranslationMetrics`; the monitored key is ``psnr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mango.errors import ConfigError
from mango.io import atomic_save
from mango.models.translation import TranslationModel, TranslationOutput
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.taskonomy.config import TaskonomyConfig

if TYPE_CHECKING:
    from mango.tasks.taskonomy.data import TaskonomyPairs


def to_uint8(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8 (``round((x + 1) / 2 · 255)``, clamped).

    Example:
        >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1)).tolist()
        [[[0, 128, 255]]]
    """
    scaled = ((image.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(1, 2, 0).numpy()


class TaskonomyTask(Task[TaskonomyConfig]):
    """Taskonomy subset (TokenFusion / CEN protocol): 1000 train / 500 val, inputs -> target."""

    name = "taskonomy"
    config_class = TaskonomyConfig
    monitor = "psnr"

    def __init__(self) -> None:
        self._cfg: TaskonomyConfig | None = None
        self._model: TranslationModel | None = None

    def build_model(self, cfg: TaskonomyConfig) -> TranslationModel:
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

    def dataset(self, cfg: TaskonomyConfig, split: str) -> TaskonomyPairs:
        from mango.tasks.taskonomy.data import TaskonomyPairs

        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        if cfg.data.root is None:
            raise ConfigError("data.root: no Taskonomy folder given (pass --data DIR)")
        return TaskonomyPairs(cfg.data.root, cfg.data.inputs, cfg.data.target, split)

    def transform(self, cfg: TaskonomyConfig, train: bool) -> Transform:
        from mango.tasks.taskonomy.transforms import EvalTransform, TrainTransform

        d = cfg.data
        return (
            TrainTransform(d.load_size, d.crop_size, d.flip)
            if train
            else EvalTransform(d.crop_size)
        )

    def loss(self, outputs: TranslationOutput, batch: Sample) -> Tensor:
        """``l1_weight · mean |G(x) - y|``, plus ``weight · L_G + L_D`` when the GAN is on."""
        cfg = self._cfg
        assert cfg is not None, "build_model sets the config the loss reads"
        target = batch["target"].to(outputs.image.dtype)
        loss = cfg.loss.l1_weight * (outputs.image - target).abs().mean()
        if cfg.loss_gan.enabled and self._model is not None:
            generator, discriminator = self._model.adversarial_losses(batch, outputs.image)
            loss = loss + cfg.loss_gan.weight * generator + discriminator
        return loss

    def metric(self, cfg: TaskonomyConfig) -> nn.Module:
        from mango.tasks.taskonomy.metrics import TranslationMetrics

        m = cfg.metrics
        fid = m.fid == "on" or (m.fid == "auto" and cfg.data.target == "rgb")
        return TranslationMetrics(feature_model=m.inception, fid=fid)

    def update_metric(self, metric: nn.Module, outputs: TranslationOutput, batch: Sample) -> None:
        metric.update(outputs.image.float(), batch["target"].float())

    def write_predictions(
        self, cfg: TaskonomyConfig, outputs: TranslationOutput, batch: Sample, out_dir: Path
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
        from mango.tasks.taskonomy.check import check_taskonomy

        return check_taskonomy(root)
