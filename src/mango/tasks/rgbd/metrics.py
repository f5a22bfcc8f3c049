"""Semantic segmentation metrics from an accumulated confusion matrix (DDP-safe, torchmetrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from mango.tasks.rgbd.layouts import IGNORE_INDEX


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Pixel accuracy, mean class accuracy, mIoU and per-class IoU, in percent.

    The state is the confusion matrix ``N[i, j]`` = number of pixels of true class ``i``
    predicted as ``j``, summed over every :meth:`update` (and over processes under DDP, where
    torchmetrics sums the state before :meth:`compute`). Pixels whose target is
    ``ignore_index`` are not counted. With ``TP_c = N[c, c]``, ``T_c = Σ_j N[c, j]`` (target
    pixels of c) and ``P_c = Σ_i N[i, c]`` (predicted pixels of c)::

        pixel_acc = 100 · Σ_c TP_c / Σ_c T_c
        mean_acc  = 100 · mean over {c : T_c > 0} of TP_c / T_c
        IoU_c     = 100 · TP_c / (T_c + P_c - TP_c)
        miou      = mean over {c : T_c + P_c > 0} of IoU_c

    A class absent from both the targets and the predictions has an undefined IoU: it is left
    out of ``miou`` and of ``per_class_iou`` (which therefore lists only the classes seen in
    the targets or predicted). A class only predicted counts with IoU 0 in ``miou`` but not in
    ``mean_acc`` (its accuracy is undefined). Before any pixel is counted every score is 0.

    Example:
        >>> metric = SegmentationMetrics(3, ["a", "b", "c"])
        >>> metric.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 0, 255]]))
        >>> scores = metric.compute()
        >>> scores["pixel_acc"], scores["mean_acc"], scores["miou"], scores["per_class_iou"]
        (66.66666666666667, 75.0, 50.0, {'a': 50.0, 'b': 50.0})
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str],
        ignore_index: int = IGNORE_INDEX,
        **kwargs: Any,
    ) -> None:
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        super().__init__(num_classes, ignore_index=ignore_index, validate_args=False, **kwargs)
        self.class_names = list(class_names)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count one batch: ``preds`` (B, H, W) class ids (or (B, C, H, W) scores), ``target``
        (B, H, W) class ids or ``ignore_index``."""
        if preds.is_floating_point():
            preds = preds.argmax(1)
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        if preds.numel():
            if int(preds.min()) < 0 or int(preds.max()) >= self.num_classes:
                raise ValueError(f"predicted class ids must lie in [0, {self.num_classes})")
            valid = target != self.ignore_index
            if bool(((target < 0) | (target >= self.num_classes))[valid].any()):
                raise ValueError(
                    f"target class ids must lie in [0, {self.num_classes}) or be "
                    f"{self.ignore_index}"
                )
        super().update(preds, target)

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """The scores as Python floats (percent) and ``per_class_iou`` {class name: percent}."""
        matrix = self.confmat.double()
        true_positive = matrix.diagonal()
        target_total = matrix.sum(1)
        predicted_total = matrix.sum(0)
        union = target_total + predicted_total - true_positive
        total = float(target_total.sum())
        if total == 0:
            return {"pixel_acc": 0.0, "mean_acc": 0.0, "miou": 0.0, "per_class_iou": {}}
        present = target_total > 0
        seen = union > 0
        accuracy = true_positive[present] / target_total[present]
        iou = torch.where(seen, true_positive / union.clamp_min(1), torch.zeros_like(union))
        return {
            "pixel_acc": 100.0 * float(true_positive.sum()) / total,
            "mean_acc": 100.0 * float(accuracy.mean()),
            "miou": 100.0 * float(iou[seen].mean()),
            "per_class_iou": {
                name: 100.0 * float(iou[c]) for c, name in enumerate(self.class_names) if seen[c]
            },
        }
