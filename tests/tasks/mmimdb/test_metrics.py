"""MultiLabelF1 against sklearn and a hand-computed case; tune_threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from mango.tasks.mmimdb.genres import GENRES
from mango.tasks.mmimdb.metrics import MultiLabelF1, tune_threshold


def _sklearn_scores(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (probs > threshold).astype(int)
    return {
        f"f1_{avg}": 100 * f1_score(targets, predicted, average=avg, zero_division=0)
        for avg in ("micro", "macro", "weighted", "samples")
    }


def test_hand_computed_case() -> None:
    # 3 movies x 3 genres, threshold 0.5 ->
    # predicted  [[1,0,1],[0,1,0],[1,1,0]]   targets [[1,0,0],[0,1,1],[1,0,0]]
    probs = torch.tensor([[0.9, 0.1, 0.6], [0.2, 0.8, 0.4], [0.7, 0.55, 0.5]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    metric = MultiLabelF1(3, ["a", "b", "c"])
    metric.update(probs[:2], targets[:2])
    metric.update(probs[2:], targets[2:])
    scores = metric.compute()
    # genre a: tp 2 -> F1 1; b: tp 1 fp 1 -> 2/3; c: fp 1 fn 1 -> 0
    assert scores["per_genre_f1"] == pytest.approx({"a": 100.0, "b": 200 / 3, "c": 0.0})
    # pooled: tp 3, fp 2, fn 1 -> 6 / 9
    assert scores["f1_micro"] == pytest.approx(200 / 3)
    assert scores["f1_macro"] == pytest.approx((100 + 200 / 3 + 0) / 3)
    # support a 2, b 1, c 1
    assert scores["f1_weighted"] == pytest.approx((2 * 100 + 200 / 3) / 4)
    # per movie: {a,c} vs {a}: 2/3; {b} vs {b,c}: 2/3; {a,b} vs {a}: 2/3
    assert scores["f1_samples"] == pytest.approx(200 / 3)
    # 0.5 itself is not above the threshold
    assert metric.threshold == 0.5


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 40),
    labels=st.integers(2, 23),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
    seed=st.integers(0, 2**16),
)
def test_matches_sklearn_on_random_data(
    rows: int, labels: int, threshold: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.random((rows, labels)).astype(np.float32)
    targets = (rng.random((rows, labels)) < 0.3).astype(np.int64)
    metric = MultiLabelF1(labels, [f"g{i}" for i in range(labels)], threshold=threshold)
    for chunk in np.array_split(np.arange(rows), 3):
        metric.update(torch.from_numpy(probs[chunk]), torch.from_numpy(targets[chunk]))
    scores = metric.compute()
    for key, value in _sklearn_scores(probs, targets, threshold).items():
        assert scores[key] == pytest.approx(value, abs=1e-4), key
    per_genre = f1_score(targets, probs > threshold, average=None, zero_division=0)
    assert list(scores["per_genre_f1"].values()) == pytest.approx(100 * per_genre, abs=1e-4)


def test_reset_and_genre_names() -> None:
    metric = MultiLabelF1(len(GENRES), GENRES)
    metric.update(torch.ones(2, 23), torch.ones(2, 23))
    assert metric.compute()["f1_micro"] == pytest.approx(100.0)
    metric.reset()
    metric.update(torch.zeros(2, 23), torch.ones(2, 23))
    scores = metric.compute()
    assert scores["f1_micro"] == 0.0 and list(scores["per_genre_f1"]) == list(GENRES)


def test_bad_shapes_raise() -> None:
    metric = MultiLabelF1(3, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        metric.update(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2 labels"):
        MultiLabelF1(1, ["a"])
    with pytest.raises(ValueError, match="2 label names"):
        MultiLabelF1(3, ["a", "b"])


def test_tune_threshold_hand_case() -> None:
    probs = torch.tensor([[0.3, 0.1], [0.35, 0.8]])
    targets = torch.tensor([[1, 0], [1, 1]])
    # 0.2: tp 3, fp 0 -> F1 1; 0.5: tp 1, fn 2 -> 0.5
    assert tune_threshold(probs, targets, grid=[0.5, 0.2]) == 0.2
    # default grid 0.05, 0.10, ...: 0.05 predicts the 0.1 (fp), 0.10 is the first perfect one
    assert tune_threshold(probs, targets) == pytest.approx(0.1)
    exact = torch.tensor([[0.3, 0.1], [0.35, 0.8]], dtype=torch.float64)
    assert tune_threshold(exact, targets) == pytest.approx(0.1)


def test_tune_threshold_matches_brute_force_sklearn() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 5)) < 0.2).astype(int)
    probs = np.clip(0.25 * targets + 0.6 * rng.random((60, 5)), 0, 1)
    grid = np.round(np.linspace(0.05, 0.95, 19), 2)
    best = tune_threshold(probs, targets, grid)
    reference = [f1_score(targets, probs > t, average="micro", zero_division=0) for t in grid]
    assert best == pytest.approx(grid[int(np.argmax(reference))])
    assert max(reference) > f1_score(targets, probs > 0.5, average="micro", zero_division=0)
