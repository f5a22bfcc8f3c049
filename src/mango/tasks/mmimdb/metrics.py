"""Multi-label F1 scores for MM-IMDb (percent, as in the paper tables).

With ``ŷ_ij = [p_ij > threshold]`` over movies i and genres j:

- micro: F1 of the pooled counts ``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)`` over all (i, j);
- macro: mean over genres of the per-genre F1; weighted: the same weighted by genre support;
- samples: mean over movies of the per-movie F1 (0 for a movie with no true and no predicted genre).

A genre without true or predicted positives scores 0 (``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multilabel_f1_score
from torchmetrics.utilities import dim_zero_cat


class MultiLabelF1(Metric):
    """Accumulates probabilities and 0/1 targets, both ``(B, C)``; ``compute`` returns percents.

    States are concatenated across processes (``dist_reduce_fx="cat"``), so the scores under DDP
    equal those of a single process that saw every batch.

    Example:
        >>> metric = MultiLabelF1(2, ["a", "b"])
        >>> metric.update(torch.tensor([[0.9, 0.2], [0.7, 0.6]]), torch.tensor([[1, 0], [0, 1]]))
        >>> scores = metric.compute()
        >>> round(scores["f1_micro"], 2), scores["per_genre_f1"]
        (80.0, {'a': 66.66666865348816, 'b': 100.0})
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        num_labels: int,
        label_names: Sequence[str],
        threshold: float = 0.5,
        per_label_key: str = "per_genre_f1",
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"multi-label F1 needs at least 2 labels, got {num_labels}")
        if len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label names for {num_labels} labels")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.num_labels = num_labels
        self.label_names = list(label_names)
        self.threshold = threshold
        self.per_label_key = per_label_key
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, targets: Tensor) -> None:
        """Add a batch: ``probs`` in [0, 1] and ``targets`` in {0, 1}, both ``(B, num_labels)``."""
        if probs.shape != targets.shape or probs.ndim != 2 or probs.shape[1] != self.num_labels:
            raise ValueError(
                f"expected probs and targets of shape (B, {self.num_labels}), got "
                f"{tuple(probs.shape)} and {tuple(targets.shape)}"
            )
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().round().to(torch.int64))

    def compute(self) -> dict[str, float | dict[str, float]]:
        """``f1_micro``, ``f1_macro``, ``f1_weighted``, ``f1_samples`` and the per-label F1s."""
        probs, targets = dim_zero_cat(self.probs), dim_zero_cat(self.targets)
        scores: dict[str, float | dict[str, float]] = {}
        for average in ("micro", "macro", "weighted"):
            value = multilabel_f1_score(
                probs,
                targets,
                num_labels=self.num_labels,
                threshold=self.threshold,
                average=average,
            )
            scores[f"f1_{average}"] = 100.0 * float(value)
        predicted = (probs > self.threshold).cpu().numpy().astype(np.int64)
        scores["f1_samples"] = 100.0 * float(
            f1_score(targets.cpu().numpy(), predicted, average="samples", zero_division=0)
        )
        per_genre = multilabel_f1_score(
            probs, targets, num_labels=self.num_labels, threshold=self.threshold, average="none"
        )
        scores[self.per_label_key] = {
            name: 100.0 * float(v) for name, v in zip(self.label_names, per_genre, strict=True)
        }
        return scores


def tune_threshold(
    probs: Tensor | np.ndarray, targets: Tensor | np.ndarray, grid: Sequence[float] | None = None
) -> float:
    """The global threshold of ``grid`` (default 0.05, 0.10, ..., 0.95) with the best micro-F1.

    Prediction is ``p > threshold`` compared in the dtype of ``probs`` (as :class:`MultiLabelF1`
    does); ties go to the first best threshold of ``grid``.

    Example:
        >>> probs = torch.tensor([[0.3, 0.1], [0.35, 0.8]])
        >>> tune_threshold(probs, torch.tensor([[1, 0], [1, 1]]), grid=[0.2, 0.5])
        0.2
    """
    p = torch.as_tensor(probs)
    p = p if p.is_floating_point() else p.float()
    t = torch.as_tensor(targets).round().bool()
    values = list(grid) if grid is not None else np.linspace(0.05, 0.95, 19).round(2).tolist()
    thresholds = torch.tensor(values, dtype=torch.float64)
    if thresholds.numel() == 0:
        raise ValueError("tune_threshold needs a non-empty grid")
    predicted = p[None] > thresholds.to(p.dtype).view(-1, 1, 1)  # (G, N, C)
    tp = (predicted & t).sum((1, 2)).double()
    fp = (predicted & ~t).sum((1, 2)).double()
    fn = (~predicted & t).sum((1, 2)).double()
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros_like(tp))
    return float(thresholds[int(torch.argmax(f1))])
