"""Multi-class scores for the ``tensors`` task (percent).

With ``ŷ_i = argmax_k p_ik``: ``accuracy`` is the share of samples with ``ŷ_i = y_i``;
``f1_macro`` the mean over classes of the per-class F1 (a class without true or predicted samples
scores 0); ``per_class_f1`` every class's F1. Multi-label targets use
:class:`~mango.tasks.mmimdb.metrics.MultiLabelF1`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score
from torchmetrics.utilities import dim_zero_cat


class MultiClassScores(Metric):
    """Accumulates predicted classes and targets; ``compute`` returns percents.

    States are concatenated across processes, so DDP scores equal single-process ones.

    Example:
        >>> metric = MultiClassScores(["a", "b", "c"])
        >>> metric.update(torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]), torch.tensor([0, 2]))
        >>> scores = metric.compute()
        >>> scores["accuracy"], round(scores["f1_macro"], 2), scores["per_class_f1"]["a"]
        (50.0, 33.33, 100.0)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, class_names: Sequence[str]) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"multi-class scores need at least 2 classes, got {len(class_names)}")
        self.class_names = list(class_names)
        self.add_state("predicted", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Add a batch: class scores ``(B, K)`` (probabilities or logits) and targets ``(B,)``."""
        if scores.ndim != 2 or scores.shape[1] != len(self.class_names) or targets.ndim != 1:
            raise ValueError(
                f"expected scores (B, {len(self.class_names)}) and targets (B,), got "
                f"{tuple(scores.shape)} and {tuple(targets.shape)}"
            )
        self.predicted.append(scores.detach().argmax(1))
        self.targets.append(targets.detach().to(torch.int64))

    def compute(self) -> dict[str, float | dict[str, float]]:
        """``accuracy``, ``f1_macro`` and ``per_class_f1``."""
        predicted, targets = dim_zero_cat(self.predicted), dim_zero_cat(self.targets)
        classes = len(self.class_names)
        accuracy = multiclass_accuracy(predicted, targets, classes, average="micro")
        f1 = multiclass_f1_score(predicted, targets, classes, average="macro", zero_division=0)
        per_class = multiclass_f1_score(
            predicted, targets, classes, average="none", zero_division=0
        )
        return {
            "accuracy": 100.0 * float(accuracy),
            "f1_macro": 100.0 * float(f1),
            "per_class_f1": {
                name: 100.0 * float(v) for name, v in zip(self.class_names, per_class, strict=True)
            },
        }


def probabilities(logits: Tensor, multilabel: bool) -> Tensor:
    """Sigmoid (multi-label) or softmax over classes (multi-class), in float32.

    Example:
        >>> probabilities(torch.zeros(1, 2), multilabel=False).tolist()
        [[0.5, 0.5]]
    """
    logits = logits.float()
    return logits.sigmoid() if multilabel else logits.softmax(-1)
