"""SegmentationMetrics against hand-computed confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import Metric

from mango.tasks.rgbd.metrics import SegmentationMetrics

NAMES = ["wall", "floor", "chair", "lamp"]


def test_hand_computed_confusion_matrix() -> None:
    metric = SegmentationMetrics(4, NAMES)
    # batch 1 (B=1, 2x4); the 255 pixels are ignored whatever is predicted there
    metric.update(
        torch.tensor([[[0, 0, 1, 1], [2, 3, 0, 1]]]),
        torch.tensor([[[0, 0, 1, 0], [2, 255, 255, 1]]]),
    )
    # batch 2 (B=2, 1x3)
    metric.update(
        torch.tensor([[[1, 2, 2]], [[0, 0, 1]]]), torch.tensor([[[1, 2, 0]], [[0, 255, 1]]])
    )
    # counted (target, pred): (0,0) (0,0) (1,1) (0,1) (2,2) (1,1) | (1,1) (2,2) (0,2) (0,0) (1,1)
    #          pred 0  1  2  3
    # target 0    [3, 1, 1, 0]    T = 5, TP = 3
    # target 1    [0, 4, 0, 0]    T = 4, TP = 4
    # target 2    [0, 0, 2, 0]    T = 2, TP = 2
    # target 3    [0, 0, 0, 0]    lamp: in neither target nor prediction
    expected_matrix = torch.tensor([[3, 1, 1, 0], [0, 4, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    assert torch.equal(metric.confmat, expected_matrix)
    scores = metric.compute()
    assert scores["pixel_acc"] == pytest.approx(100 * 9 / 11)
    assert scores["mean_acc"] == pytest.approx(100 * (3 / 5 + 1 + 1) / 3)
    # IoU = TP / (T + P - TP): wall 3/(5+3-3), floor 4/(4+5-4), chair 2/(2+3-2)
    iou = {"wall": 60.0, "floor": 80.0, "chair": 100 * 2 / 3}
    assert scores["per_class_iou"] == pytest.approx(iou)
    assert "lamp" not in scores["per_class_iou"]
    assert scores["miou"] == pytest.approx(sum(iou.values()) / 3)

    metric.reset()
    assert int(metric.confmat.sum()) == 0
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = metric.compute()
    assert empty == {"pixel_acc": 0.0, "mean_acc": 0.0, "miou": 0.0, "per_class_iou": {}}


def test_class_only_predicted_counts_in_miou_not_mean_acc() -> None:
    metric = SegmentationMetrics(3, ["a", "b", "c"])
    metric.update(torch.tensor([[0, 0, 2, 1]]), torch.tensor([[0, 0, 0, 1]]))
    scores = metric.compute()
    assert scores["per_class_iou"] == pytest.approx({"a": 100 * 2 / 3, "b": 100.0, "c": 0.0})
    assert scores["miou"] == pytest.approx((200 / 3 + 100 + 0) / 3)
    assert scores["mean_acc"] == pytest.approx((100 * 2 / 3 + 100) / 2)


def test_logits_are_argmaxed_and_bad_input_rejected() -> None:
    metric = SegmentationMetrics(2, ["a", "b"])
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]]])  # (B=1, C=2, 1, 2): predicts a, b
    metric.update(logits, torch.tensor([[[0, 0]]]))
    assert torch.equal(metric.confmat, torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(ValueError, match="target class ids"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="predicted class ids"):
        metric.update(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="differ"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="3 class names"):
        SegmentationMetrics(2, ["a", "b", "c"])


def test_is_a_ddp_syncing_metric() -> None:
    metric = SegmentationMetrics(3, ["a", "b", "c"])
    assert isinstance(metric, Metric) and isinstance(metric, torch.nn.Module)
    assert metric._reductions["confmat"].__name__ == "dim_zero_sum"  # summed across processes


@settings(max_examples=25, deadline=None)
@given(
    classes=st.integers(2, 6),
    data=st.data(),
)
def test_matches_numpy_reference(classes: int, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    shape = tuple(data.draw(st.integers(1, n)) for n in (3, 6, 6))
    target = rng.integers(0, classes, shape)
    target[rng.random(shape) < 0.2] = 255
    guess = rng.integers(0, classes, shape)
    preds = np.where(rng.random(shape) < 0.5, target % 255 % classes, guess)
    metric = SegmentationMetrics(classes, [str(c) for c in range(classes)])
    metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    scores = metric.compute()

    keep = target != 255
    t, p = target[keep], preds[keep]
    if t.size == 0:
        assert scores["miou"] == 0.0
        return
    assert scores["pixel_acc"] == pytest.approx(100 * np.mean(t == p))
    accs = [np.mean(p[t == c] == c) for c in range(classes) if (t == c).any()]
    assert scores["mean_acc"] == pytest.approx(100 * np.mean(accs))
    ious = {
        str(c): 100 * np.sum((t == c) & (p == c)) / np.sum((t == c) | (p == c))
        for c in range(classes)
        if ((t == c) | (p == c)).any()
    }
    assert scores["per_class_iou"] == pytest.approx(ious)
    assert scores["miou"] == pytest.approx(np.mean(list(ious.values())))
