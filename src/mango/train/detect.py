"""Telling corrupted inputs from clean ones, and which modality broke: ``mango eval --corrupt``.

During an evaluation over a split with corrupted samples (:mod:`mango.train.corrupt`),
:class:`Detection` keeps per sample (``position`` in the split):

- the scores, each higher = more anomalous: ``bits_per_dim`` (the flow's NLL of the fused
  tokens; models with a flow), ``neg_msp`` and ``energy`` (the task head's,
  :meth:`~mango.tasks.base.Task.head_scores`), and ``gain_bits`` (the largest per-modality
  likelihood gain below);
- ``gains``: for each modality ``m`` the flow's likelihood gain from re-imputing ``m`` given
  the others, in bits per dimension of ``m``
  (:meth:`~mango.models.fusion.FlowFusion.likelihood_gains`; averaged over the flow-fused
  stages and over the windows of a sliding-window evaluation), and ``blamed``, the modality
  with the largest gain.

:meth:`Detection.summary` reports, for each score, the AUROC of telling corrupted from clean
samples (:func:`sklearn.metrics.roc_auc_score`, corrupted = positive class; ``None`` when the
split has only one kind), and the blame accuracy: the share of corrupted samples whose blamed
modality is the corrupted one. It writes one JSON line per sample (see :func:`score_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from mango.io import atomic_write_text
from mango.models.scores import recording_gains
from mango.models.task_model import TaskModel, TaskOutput
from mango.tasks.base import Sample, Task
from mango.train.corrupt import CorruptSetting

#: the order of the scores in the results
SCORES = ("bits_per_dim", "neg_msp", "energy", "gain_bits")


def auroc(corrupted: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve of ``scores`` telling ``corrupted`` (positive) from clean.

    ``None`` when only one kind of sample is present or a score is not finite.

    Example:
        >>> auroc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    labels, values = np.asarray(corrupted, dtype=bool), np.asarray(scores, dtype=float)
    if labels.all() or not labels.any() or not np.isfinite(values).all():
        return None
    return float(roc_auc_score(labels, values))


class Detection:
    """Per-sample scores of one evaluation with ``setting``'s corruption (see the module doc)."""

    def __init__(
        self, task: Task[Any], cfg: Any, modalities: Sequence[str], setting: CorruptSetting
    ) -> None:
        self.task, self.cfg, self.setting = task, cfg, setting
        self.modalities = list(modalities)
        self.rows: list[dict[str, Any]] = []
        self.gains: list[list[Tensor]] = []  # one list per flow, filled by its forward calls

    def _batch_gains(self, size: int) -> Tensor | None:
        """``(B, M)``: the gains the flows recorded since the last batch, averaged."""
        per_flow = []
        for calls in self.gains:
            matching = [g for g in calls if g.shape[0] == size]
            if matching:
                per_flow.append(torch.stack(matching).mean(0))
            calls.clear()
        return torch.stack(per_flow).mean(0) if per_flow else None

    def update(self, outputs: TaskOutput, batch: Sample) -> None:
        """Add one evaluated batch (its ``position`` and ``corrupted`` from the dataset)."""
        positions = torch.as_tensor(batch["position"]).reshape(-1).tolist()
        corrupted = torch.as_tensor(batch["corrupted"]).reshape(-1).tolist()
        scores: dict[str, Tensor] = {}
        if outputs.bits_per_dim is not None:
            scores["bits_per_dim"] = outputs.bits_per_dim
        scores.update(self.task.head_scores(outputs, self.cfg))
        gains = self._batch_gains(len(positions))
        if gains is not None:
            scores["gain_bits"] = gains.max(dim=1).values
        columns = {k: v.detach().float().cpu().reshape(-1).tolist() for k, v in scores.items()}
        for i, (position, broken) in enumerate(zip(positions, corrupted, strict=True)):
            row: dict[str, Any] = {"position": int(position), "corrupted": bool(broken)}
            row.update({k: columns[k][i] for k in SCORES if k in columns})
            if gains is not None:
                row["gains"] = dict(zip(self.modalities, gains[i].tolist(), strict=True))
                row["blamed"] = self.modalities[int(gains[i].argmax())]
            self.rows.append(row)

    def summary(self, scores_path: str | Path | None = None) -> dict[str, Any]:
        """The results' entries: ``corrupt`` (the setting and its sample count),
        ``detection_auroc`` {score: AUROC}, ``blame_accuracy`` and ``blame_counts`` (models
        with a flow), ``scores`` (the JSONL path, or ``None``); writes the JSONL there."""
        rows = sorted(self.rows, key=lambda r: r["position"])
        labels = [r["corrupted"] for r in rows]
        results: dict[str, Any] = {
            "corrupt": {**self.setting.describe(), "samples": int(sum(labels))},
            "detection_auroc": {
                name: auroc(labels, [r[name] for r in rows])
                for name in SCORES
                if rows and all(name in r for r in rows)
            },
        }
        broken = [r for r in rows if r["corrupted"] and "blamed" in r]
        if broken:
            blamed = [r["blamed"] for r in broken]
            results["blame_accuracy"] = blamed.count(self.setting.modality) / len(broken)
            results["blame_counts"] = {m: blamed.count(m) for m in self.modalities}
        if scores_path is not None:
            atomic_write_text(scores_path, score_lines(rows))
        results["scores"] = None if scores_path is None else str(scores_path)
        return results


def score_lines(rows: Sequence[Mapping[str, Any]]) -> str:
    """The JSONL text: one object per sample, in split order, with ``position``, ``corrupted``,
    the scores it has (``bits_per_dim``, ``neg_msp``, ``energy``, ``gain_bits``) and, with a
    flow, ``gains`` {modality: bits per dimension} and ``blamed``."""
    return "".join(json.dumps(dict(r)) + "\n" for r in rows)


def scores_path(out: str | Path | None, given: str | Path | None) -> Path | None:
    """Where the per-sample scores go: ``--scores``, else beside ``--out`` as
    ``<out stem>.scores.jsonl``, else nowhere."""
    if given is not None:
        return Path(given)
    return None if out is None else Path(out).with_suffix(".scores.jsonl")


@contextmanager
def detecting(
    task: Task[Any], cfg: Any, model: TaskModel, setting: CorruptSetting | None
) -> Iterator[Detection | None]:
    """A :class:`Detection` for ``setting`` (``None`` without one) while every flow of
    ``model`` records its likelihood gains."""
    if setting is None:
        yield None
        return
    detection = Detection(task, cfg, model.modalities, setting)
    with recording_gains(model) as gains:
        detection.gains = gains
        yield detection
