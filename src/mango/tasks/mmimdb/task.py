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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from mango.errors import ConfigError, DataError
from mango.io import JsonLinesWriter
from mango.models.classification import ClassificationOutput, GenreClassifier
from mango.models.scores import multilabel_scores
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.mmimdb.config import MMIMDbConfig
from mango.tasks.mmimdb.genres import GENRES
from mango.tasks.mmimdb.transforms import poster_flip

if TYPE_CHECKING:
    from mango.tasks.mmimdb.data import MMIMDbDataset

#: the file ``mango predict`` writes under its ``--out`` folder
PREDICTIONS_FILE = "predictions.jsonl"


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


class MMIMDbTask(Task[MMIMDbConfig]):
    """MM-IMDb (Arevalo et al. 2017): 23 genres from poster + plot, 15552 / 2608 / 7799 movies."""

    name = "mmimdb"
    config_class = MMIMDbConfig
    monitor = "f1_micro"

    def __init__(self) -> None:
        self._pos_weight: Tensor | None = None
        self._weights_cfg: MMIMDbConfig = None
        self._predictions = JsonLinesWriter()

    def build_model(self, cfg: MMIMDbConfig) -> GenreClassifier:
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

    def dataset(self, cfg: MMIMDbConfig, split: str) -> MMIMDbDataset:
        """The movies of ``split``; an empty split is a :class:`DataError` naming its file."""
        from mango.tasks.mmimdb.data import MMIMDbDataset

        if split not in ("train", "val", "dev", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        if cfg.data.root is None:
            raise ConfigError("data.root: no MM-IMDb folder given (pass --data DIR)")
        data = MMIMDbDataset(cfg.data.root, split, cfg.data.image_size, cfg.data.strict_sizes)
        if len(data) == 0:
            raise DataError(f"{data.source}: split {data.split!r} has no movies")
        return data

    def transform(self, cfg: MMIMDbConfig, train: bool) -> Transform:
        return poster_flip(cfg.data.flip and train)

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
    def prepare_eval(self, model: GenreClassifier, cfg: MMIMDbConfig) -> MMIMDbConfig:
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
        from mango.tasks.mmimdb.metrics import tune_threshold

        threshold = tune_threshold(torch.cat(probs), torch.cat(targets))
        model_settings = cfg.model.model_copy(update={"threshold": threshold})
        return cfg.model_copy(update={"model": model_settings})

    def eval_settings(self, cfg: MMIMDbConfig) -> dict[str, Any]:
        source = "dev" if cfg.model.tune_threshold else "config"
        return {"threshold": cfg.model.threshold, "threshold_source": source}

    def metric(self, cfg: MMIMDbConfig) -> nn.Module:
        from mango.tasks.mmimdb.metrics import MultiLabelF1

        return MultiLabelF1(len(GENRES), GENRES, threshold=cfg.model.threshold)

    def head_scores(self, outputs: ClassificationOutput, cfg: MMIMDbConfig) -> dict[str, Tensor]:
        """Scores of the genres' independent sigmoid heads (multi-label)."""
        return multilabel_scores(outputs.logits)

    def update_metric(
        self, metric: nn.Module, outputs: ClassificationOutput, batch: Sample
    ) -> None:
        metric.update(torch.sigmoid(outputs.logits.float()), batch["labels"])

    def write_predictions(
        self, cfg: MMIMDbConfig, outputs: ClassificationOutput, batch: Sample, out_dir: Path
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

    def missing_order(self, cfg: MMIMDbConfig, split: str, count: int) -> np.ndarray | None:
        """The shipped order of Lee et al.'s protocol for a split of the published size."""
        from mango.tasks.mmimdb.missing import shipped_order

        return shipped_order(split, count)

    def check_data(self, root: Path) -> CheckReport:
        from mango.tasks.mmimdb.check import check_mmimdb

        return check_mmimdb(root)
