"""The ``tensors`` task: classification from your own array modalities (``docs/tensors.md``).

Config sections (``configs/tensors-smoke.yaml``):

- ``data``: ``root`` (or ``--data``), ``modalities`` (default: every array but ``label``/``id``),
  ``target`` (multiclass | multilabel, inferred from ``label``), ``classes`` and ``class_names``,
  ``tokens`` / ``vector_tokens`` (how vectors become tokens), ``val_fraction`` (the seeded
  holdout of train when there is no ``val.npz``), ``standardize``;
- ``model``: ``fusion`` (mango | concat | late | single | an attention baseline),
  ``readout`` (flatten | mean), ``noise``, ``modalities`` (a subset; ``single`` takes one),
  ``dim``, ``head_hidden``, ``dropout``, ``threshold`` (multi-label).

When absent, ``data.modalities``, ``data.target`` and ``data.classes`` are filled in from the
training split by :meth:`TensorsTask.build_model`, so the stored config records them. Loss:
cross-entropy (multi-class) or binary cross-entropy (multi-label). Metrics:
:class:`~mango.tasks.tensors.metrics.MultiClassScores` or
:class:`~mango.tasks.mmimdb.metrics.MultiLabelF1`; the monitored key is ``f1_macro``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from mango.errors import ConfigError, DataError
from mango.io import JsonLinesWriter
from mango.models.classification import ClassificationOutput
from mango.models.scores import multilabel_scores, softmax_scores
from mango.models.tensors import ModalitySpec, Standardize, TensorClassifier
from mango.tasks.base import Sample, Task, Transform
from mango.tasks.check import CheckReport
from mango.tasks.tensors.config import TensorsConfig
from mango.tasks.tensors.data import (
    SplitArrays,
    TensorsDataset,
    check_classes,
    check_compatible,
    read_split,
    split_path,
)
from mango.tasks.tensors.metrics import probabilities
from mango.tasks.transforms import identity

#: the file ``mango predict`` writes under its ``--out`` folder
PREDICTIONS_FILE = "predictions.jsonl"


class TensorsTask(Task[TensorsConfig]):
    """Any ``M >= 2`` array modalities -> multi-class or multi-label targets."""

    name = "tensors"
    config_class = TensorsConfig
    monitor = "f1_macro"

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], SplitArrays] = {}
        self._predictions = JsonLinesWriter()

    # ----------------------------------------------------------------------------- reading
    def _root(self, cfg: TensorsConfig) -> Path:
        if cfg.data.root is None:
            raise ConfigError("data.root: no tensors folder given (pass --data DIR)")
        return Path(cfg.data.root)

    def _read(self, cfg: TensorsConfig, split: str) -> SplitArrays:
        path = split_path(self._root(cfg), split)
        stat = path.stat() if path.is_file() else None
        modalities = tuple(cfg.data.modalities or ())
        key = (str(path), stat and (stat.st_mtime_ns, stat.st_size), modalities, cfg.data.target)
        if key not in self._cache:
            self._cache[key] = read_split(
                self._root(cfg), split, cfg.data.modalities, cfg.data.target
            )
        return self._cache[key]

    def _holdout(self, cfg: TensorsConfig, count: int) -> tuple[list[int], list[int]]:
        """``(train, val)`` indices of ``train.npz`` when there is no ``val.npz``."""
        if split_path(self._root(cfg), "val").is_file():
            return list(range(count)), []
        if count < 2:
            raise DataError(
                f"{split_path(self._root(cfg), 'train')}: 1 sample; a validation holdout needs 2+"
            )
        held = min(max(int(round(count * cfg.data.val_fraction)), 1), count - 1)
        order = np.random.default_rng(cfg.trainer.seed).permutation(count).tolist()
        return sorted(order[held:]), sorted(order[:held])

    def _resolve(self, cfg: TensorsConfig, train: SplitArrays) -> None:
        """Fill ``data.modalities``, ``data.target`` and ``data.classes`` from the train split."""
        d = cfg.data
        d.modalities = d.modalities or train.modalities
        d.target = d.target or ("multiclass" if train.label.ndim == 1 else "multilabel")
        if d.target == "multiclass" and d.classes is None:
            d.classes = max(int(train.label.max()) + 1, 2)
        outputs = d.classes if d.target == "multiclass" else train.label.shape[1]
        if d.class_names is not None and len(d.class_names) != outputs:
            raise ConfigError(
                f"data.class_names: {len(d.class_names)} names for {outputs} "
                f"{'classes' if d.target == 'multiclass' else 'labels'}"
            )
        if d.target == "multiclass":
            check_classes(train, d.classes)

    def class_names(self, cfg: TensorsConfig) -> list[str]:
        """``data.class_names``, or ``"0" .. "K-1"``."""
        if cfg.data.class_names is not None:
            return list(cfg.data.class_names)
        count = cfg.data.classes if cfg.data.target == "multiclass" else None
        if count is None:
            count = self._read(cfg, "train").label.shape[1]
        return [str(k) for k in range(count)]

    # ------------------------------------------------------------------------------- model
    def build_model(self, cfg: TensorsConfig) -> TensorClassifier:
        train = self._read(cfg, "train")
        self._resolve(cfg, train)
        d, m = cfg.data, cfg.model
        used = m.modalities or d.modalities
        unknown = [name for name in used if name not in d.modalities]
        if unknown:
            raise ConfigError(
                f"model.modalities: {unknown[0]!r} is not one of data.modalities {d.modalities}"
            )
        shapes = {name: tuple(train.arrays[name].shape[1:]) for name in used}
        specs = {
            name: ModalitySpec(shape, d.tokens.get(name, d.vector_tokens))
            for name, shape in shapes.items()
        }
        statistics = None
        if d.standardize:
            rows, _ = self._holdout(cfg, len(train))
            statistics = {name: Standardize.fit(train.arrays[name][rows]) for name in used}
        # mango.train seeds the global generator from trainer.seed before building any model
        return TensorClassifier(
            specs,
            len(self.class_names(cfg)),
            fusion=m.fusion,
            dim=m.dim,
            flow=cfg.flow.model_dump(),
            head_hidden=m.head_hidden,
            dropout=m.dropout,
            statistics=statistics,
            fusion_settings=cfg.fusion.model_dump(),
            readout=m.readout,
            noise=m.noise,
        )

    def dataset(self, cfg: TensorsConfig, split: str) -> TensorsDataset:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"--split: expected train, val or test, got {split!r}")
        train = self._read(cfg, "train")
        self._resolve(cfg, train)
        if split == "test" or (split == "val" and split_path(self._root(cfg), "val").is_file()):
            data = self._read(cfg, split)
            check_compatible(train, data)
            if cfg.data.target == "multiclass":
                check_classes(data, cfg.data.classes)
            return TensorsDataset(data)
        rows, held = self._holdout(cfg, len(train))
        return TensorsDataset(train, rows if split == "train" else held)

    def transform(self, cfg: TensorsConfig, train: bool) -> Transform:
        return identity

    # ------------------------------------------------------------------------ loss, metric
    def loss(self, outputs: ClassificationOutput, batch: Sample) -> Tensor:
        if batch["label"].ndim == 1:
            return F.cross_entropy(outputs.logits, batch["label"])
        targets = batch["label"].to(outputs.logits.dtype)
        return F.binary_cross_entropy_with_logits(outputs.logits, targets)

    def metric(self, cfg: TensorsConfig) -> nn.Module:
        names = self.class_names(cfg)
        if cfg.data.target == "multiclass":
            from mango.tasks.tensors.metrics import MultiClassScores

            return MultiClassScores(names)
        from mango.tasks.mmimdb.metrics import MultiLabelF1

        return MultiLabelF1(len(names), names, cfg.model.threshold, per_label_key="per_class_f1")

    def head_scores(self, outputs: ClassificationOutput, cfg: TensorsConfig) -> dict[str, Tensor]:
        """Softmax scores for a multi-class target, sigmoid-head scores for a multi-label one."""
        if cfg.data.target == "multilabel":
            return multilabel_scores(outputs.logits)
        return softmax_scores(outputs.logits)

    def update_metric(
        self, metric: nn.Module, outputs: ClassificationOutput, batch: Sample
    ) -> None:
        multilabel = batch["label"].ndim == 2
        metric.update(probabilities(outputs.logits, multilabel), batch["label"])

    def eval_settings(self, cfg: TensorsConfig) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "target": cfg.data.target,
            "fusion": cfg.model.fusion,
            "readout": cfg.model.readout,
        }
        if cfg.data.target == "multilabel":
            settings["threshold"] = cfg.model.threshold
        return settings

    def write_predictions(
        self, cfg: TensorsConfig, outputs: ClassificationOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        """Add one JSON line per sample to ``out_dir/predictions.jsonl``.

        Multi-class: ``{"id", "class", "probabilities": {class: p}, "true_class"}``; multi-label:
        ``{"id", "labels": [p > model.threshold], "probabilities", "true_labels"}``. Returns
        ``[path]`` on the first call and ``[]`` afterwards (one file in all).
        """
        names = self.class_names(cfg)
        multilabel = batch["label"].ndim == 2
        probs = probabilities(outputs.logits, multilabel).cpu().numpy()
        labels = batch["label"].cpu().numpy()
        records = []
        for sample, p, y in zip(batch["id"], probs, labels, strict=True):
            record: dict[str, Any] = {"id": sample}
            if multilabel:
                record["labels"] = [
                    n for n, v in zip(names, p, strict=True) if v > cfg.model.threshold
                ]
            else:
                record["class"] = names[int(p.argmax())]
            record["probabilities"] = {n: round(float(v), 5) for n, v in zip(names, p, strict=True)}
            if multilabel:
                record["true_labels"] = [n for n, v in zip(names, y, strict=True) if v > 0.5]
            else:
                record["true_class"] = names[int(y)]
            records.append(record)
        path = Path(out_dir) / PREDICTIONS_FILE
        return [path] if self._predictions.add(path, records) else []

    def check_data(self, root: Path) -> CheckReport:
        from mango.tasks.tensors.check import check_tensors

        return check_tensors(root)
