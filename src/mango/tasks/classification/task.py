"""The MM-IMDb task: multi-label movie genre classification from the poster and the plot.

Config sections (``configs/mmimdb.yaml``, ``configs/mmimdb-smoke.yaml``):

- ``data``: ``root`` (or ``--data``), ``image_size`` (posters resized to a square), ``strict_sizes``
  (require the published 15552/2608/7799 split sizes), ``max_text_tokens``, ``flip``;
- ``model``: ``fusion`` (mango | concat | late | image | text), ``dim``, ``head_hidden``,
  ``dropout``, ``train_image_encoder`` / ``train_text_encoder``, ``image_weights`` /
  ``text_encoder`` (local paths), ``class_weights`` (none | balanced), ``threshold``.

Splits: ``train``, ``val`` (the release's ``dev``) and ``test``. Loss: binary cross-entropy with
logits, with ``pos_weight_j = (N - P_j) / P_j`` from the training labels when
``class_weights: balanced`` (``N`` movies, ``P_j`` positives of genre ``j``; 1 when ``P_j = 0``).
Metric: F1 micro/macro/weighted/samples in percent at ``model.threshold``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import default_collate

from mango.config import DataSection, RunConfig, Section
from mango.errors import ConfigError, DataError
from mango.io import JsonLinesWriter
from mango.models.classification import FUSIONS, ClassificationOutput, GenreClassifier
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.classification.genres import GENRES

#: the file ``mango predict`` writes under its ``--out`` folder
PREDICTIONS_FILE = "predictions.jsonl"


class MMIMDbData(DataSection):
    """An MM-IMDb folder in either release format (docs/data.md)."""

    root: str | None = Field(None, description="dataset folder (or pass --data)")
    image_size: int = Field(224, ge=1, description="posters are resized to image_size x image_size")
    strict_sizes: bool = Field(True, description="require the published split sizes")
    max_text_tokens: int = Field(128, ge=2, description="plots padded/truncated to T tokens")
    flip: bool = Field(True, description="random horizontal poster flips in training")


class GenreModelSettings(Section):
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


def balanced_pos_weight(labels: np.ndarray) -> Tensor:
    """``(N, C)`` 0/1 labels -> ``(C,)`` float32 ``pos_weight = (N - P) / P`` (1 where ``P = 0``).

    Example:
        >>> balanced_pos_weight(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])).tolist()
        [1.0, 3.0, 1.0]
    """
    labels = np.asarray(labels, dtype=np.float64)
    positives = labels.sum(0)
    weights = np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), 1.0)
    return torch.from_numpy(weights.astype(np.float32))


def _flip_poster(flip: bool) -> Transform:
    def apply(sample: Sample, generator: torch.Generator | None) -> Sample:
        if flip and generator is not None and torch.rand((), generator=generator) < 0.5:
            sample = {**sample, "image": sample["image"].flip(-1)}
        return sample

    return apply


class MMIMDbTask(Task):
    """MM-IMDb (Arevalo et al. 2017): 23 genres from poster + plot, 15552 / 2608 / 7799 movies."""

    name = "mmimdb"
    config_class = MMIMDbConfig
    monitor = "f1_micro"

    def __init__(self) -> None:
        self._pos_weight: Tensor | None = None
        self._weights_cfg: Any = None
        self._predictions = JsonLinesWriter()

    def build_model(self, cfg: Any) -> nn.Module:
        # The balanced loss weights are computed on the first loss call (training only).
        self._weights_cfg, self._pos_weight = cfg, None
        m = cfg.model
        # mango.train seeds the global generator from trainer.seed before building any model
        return GenreClassifier(
            len(GENRES),
            cfg.data.image_size,
            cfg.data.max_text_tokens,
            fusion=m.fusion,
            dim=m.dim,
            flow=cfg.flow.model_dump(),
            head_hidden=m.head_hidden,
            dropout=m.dropout,
            train_image_encoder=m.train_image_encoder,
            train_text_encoder=m.train_text_encoder,
            image_weights=m.image_weights,
            text_encoder=m.text_encoder,
            fusion_settings=cfg.fusion.model_dump(),
            noise=m.noise,
        )

    def dataset(self, cfg: Any, split: str) -> Any:
        """The movies of ``split``; an empty split is a :class:`DataError` naming its file."""
        from mango.tasks.classification.dataset import MMIMDbDataset

        if split not in ("train", "val", "dev", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        if cfg.data.root is None:
            raise ConfigError("data.root: no MM-IMDb folder given (pass --data DIR)")
        data = MMIMDbDataset(cfg.data.root, split, cfg.data.image_size, cfg.data.strict_sizes)
        if len(data) == 0:
            raise DataError(f"{data.source}: split {data.split!r} has no movies")
        return data

    def transform(self, cfg: Any, train: bool) -> Transform:
        return _flip_poster(cfg.data.flip and train)

    def pos_weight(self) -> Tensor | None:
        """The BCE ``pos_weight`` of the model last built (``None`` unless ``balanced``)."""
        cfg = self._weights_cfg
        if cfg is None or cfg.model.class_weights == "none":
            return None
        if self._pos_weight is None:
            self._pos_weight = balanced_pos_weight(self.dataset(cfg, "train").label_matrix())
        return self._pos_weight

    def loss(self, outputs: ClassificationOutput, batch: Sample) -> Tensor:
        weight = self.pos_weight()
        if weight is not None:
            weight = weight.to(outputs.logits.device, outputs.logits.dtype)
        targets = batch["labels"].to(outputs.logits.dtype)
        return F.binary_cross_entropy_with_logits(outputs.logits, targets, pos_weight=weight)

    @torch.no_grad()
    def prepare_eval(self, model: nn.Module, cfg: Any) -> Any:
        """With ``model.tune_threshold``, replace ``model.threshold`` by the dev-tuned one.

        Only the dev split is used (never test): the micro-F1-best threshold of
        :func:`tune_threshold`'s grid over the model's dev probabilities.
        """
        if not cfg.model.tune_threshold:
            return cfg
        dev, transform = self.dataset(cfg, "val"), self.transform(cfg, train=False)
        device = next(model.parameters()).device
        size = cfg.trainer.eval_batch
        probs, targets = [], []
        for start in range(0, len(dev), size):
            items = [transform(dev[i], None) for i in range(start, min(start + size, len(dev)))]
            batch = default_collate(items)
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            probs.append(self.predict(model, batch, cfg).logits.sigmoid().cpu())
            targets.append(batch["labels"].cpu())
        from mango.tasks.classification.metrics import tune_threshold

        threshold = tune_threshold(torch.cat(probs), torch.cat(targets))
        model_settings = cfg.model.model_copy(update={"threshold": threshold})
        return cfg.model_copy(update={"model": model_settings})

    def eval_settings(self, cfg: Any) -> dict[str, Any]:
        source = "dev" if cfg.model.tune_threshold else "config"
        return {"threshold": cfg.model.threshold, "threshold_source": source}

    def metric(self, cfg: Any) -> nn.Module:
        from mango.tasks.classification.metrics import MultiLabelF1

        return MultiLabelF1(len(GENRES), GENRES, threshold=cfg.model.threshold)

    def update_metric(
        self, metric: nn.Module, outputs: ClassificationOutput, batch: Sample
    ) -> None:
        metric.update(torch.sigmoid(outputs.logits.float()), batch["labels"])

    def write_predictions(
        self, cfg: Any, outputs: ClassificationOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        """Add one JSON line per movie to ``out_dir/predictions.jsonl``.

        Line: ``{"id", "genres": predicted (p > model.threshold), "probabilities": {genre: p},
        "true_genres"}``. The first batch of this task instance starts the file afresh; every
        batch rewrites it atomically, so it always holds whole lines of the batches so far.
        Returns ``[path]`` on the first call and ``[]`` afterwards (one file in all).
        """
        path = Path(out_dir) / PREDICTIONS_FILE
        probs = torch.sigmoid(outputs.logits.float()).cpu().numpy()
        labels = batch["labels"].cpu().numpy()
        records = [
            {
                "id": movie,
                "genres": [g for g, v in zip(GENRES, p, strict=True) if v > cfg.model.threshold],
                "probabilities": {g: round(float(v), 5) for g, v in zip(GENRES, p, strict=True)},
                "true_genres": [g for g, v in zip(GENRES, y, strict=True) if v > 0.5],
            }
            for movie, p, y in zip(batch["id"], probs, labels, strict=True)
        ]
        return [path] if self._predictions.add(path, records) else []

    def missing_order(self, cfg: Any, split: str, count: int) -> np.ndarray | None:
        """The shipped order of Lee et al.'s protocol for a split of the published size."""
        from mango.tasks.classification.missing import shipped_order

        return shipped_order(split, count)

    def check_data(self, root: Path) -> CheckReport:
        from mango.tasks.classification.check import check_mmimdb

        return check_mmimdb(root)
