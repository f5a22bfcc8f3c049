"""Corrupted inputs (--corrupt): each kind's formula, what it leaves alone, seeding, the flags'
one-line errors, and the detection summary (AUROC against sklearn, blame)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mango.errors import ConfigError
from mango.models.scores import multilabel_scores, softmax_scores
from mango.train.corrupt import (
    KINDS,
    CorruptDataset,
    CorruptSetting,
    corrupted_rows,
    sample_generator,
    shift_edges,
    with_corruption,
)
from mango.train.data import TransformedDataset
from mango.train.detect import Detection, auroc

COUNT = 10


def _split() -> TransformedDataset:
    """Ten samples with distinct rgb, depth and mask, keyed ``(index, None)`` like eval's."""
    samples = [
        {
            "rgb": torch.full((3, 8, 8), float(i)) + torch.arange(8.0),
            "depth": torch.arange(64.0).reshape(1, 8, 8) / 10 + i,
            "mask": torch.full((8, 8), i),
        }
        for i in range(COUNT)
    ]
    return TransformedDataset(samples, lambda s, g: s)


def _corrupt(text: str, share: float | None = None, seed: int | None = None) -> CorruptDataset:
    setting = CorruptSetting.parse(text, share, seed)
    assert setting is not None
    return with_corruption(_split(), setting, ["rgb", "depth"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_changes_only_the_chosen_input_of_the_chosen_samples(kind: str) -> None:
    data, clean = _corrupt(f"depth:{kind}"), _split()
    rows = corrupted_rows(COUNT, 0.5, seed=0)
    assert rows.sum() == 5
    for i in range(COUNT):
        got, want = data[(i, None)], clean[(i, None)]
        assert got["corrupted"] == rows[i] and got["position"] == i
        assert torch.equal(got["rgb"], want["rgb"]) and torch.equal(got["mask"], want["mask"])
        assert torch.equal(got["depth"], want["depth"]) != rows[i]


def test_the_formulas() -> None:
    clean = _split()
    for text, formula in [
        ("depth:noise:0.5", None),
        ("depth:blank", lambda x, i: torch.zeros_like(x)),
        ("depth:blank:-2", lambda x, i: torch.full_like(x, -2.0)),
        ("depth:scale", lambda x, i: 2 * x),
        ("depth:scale:0.1", lambda x, i: 0.1 * x),
    ]:
        data = _corrupt(text)
        for i in np.nonzero(data.rows)[0]:
            x, got = clean[(i, None)]["depth"], data[(i, None)]["depth"]
            if formula is None:  # x + a ε: the noise has the strength's scale
                noise = (got - x) / 0.5
                expected = torch.randn(x.shape, generator=sample_generator(0, int(i)))
                torch.testing.assert_close(noise, expected)
            else:
                torch.testing.assert_close(got, formula(x, i))


def test_shift_moves_by_the_strength_with_edges_replicated() -> None:
    data, clean = _corrupt("depth:shift:0.25"), _split()
    for i in np.nonzero(data.rows)[0]:
        x, got = clean[(i, None)]["depth"], data[(i, None)]["depth"]
        candidates = [shift_edges(x, [dy, dx]) for dy in (-2, 2) for dx in (-2, 2)]
        assert sum(torch.equal(got, c) for c in candidates) == 1
    moved = shift_edges(torch.arange(4.0).reshape(1, 1, 4), [0, 1])
    assert moved.flatten().tolist() == [0.0, 0.0, 1.0, 2.0]


def test_swap_takes_another_samples_input() -> None:
    data, clean = _corrupt("depth:swap"), _split()
    for i in np.nonzero(data.rows)[0]:
        got = data[(i, None)]["depth"]
        matches = [j for j in range(COUNT) if torch.equal(got, clean[(j, None)]["depth"])]
        assert len(matches) == 1 and matches[0] != i


def test_text_inputs_take_blank_and_swap_only() -> None:
    from mango.train.corrupt import corrupt_input

    g = torch.Generator().manual_seed(0)
    assert corrupt_input("a plot", "blank", 0.0, g) == ""
    assert corrupt_input("a plot", "swap", None, g, "another plot") == "another plot"
    with pytest.raises(ConfigError, match="--corrupt: noise needs an array input"):
        corrupt_input("a plot", "noise", 1.0, g)


def test_the_same_seed_corrupts_the_same_samples_the_same_way() -> None:
    first, again = _corrupt("depth:noise", seed=3), _corrupt("depth:noise", seed=3)
    other = _corrupt("depth:noise", seed=4)
    for i in range(COUNT):
        assert torch.equal(first[(i, None)]["depth"], again[(i, None)]["depth"])
    assert not np.array_equal(first.rows, other.rows)
    assert _corrupt("depth:noise", share=0.3).rows.sum() == 3
    assert _corrupt("depth:noise", share=1.0).rows.all()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("depth", None, None), "--corrupt: expected MOD:KIND[:STRENGTH], got 'depth'"),
        (("depth:melt", None, None), "--corrupt: kind must be one of noise, blank, shift"),
        (("depth:swap:2", None, None), "--corrupt: swap takes no strength"),
        (("depth:noise:loud", None, None), "--corrupt: the strength must be a number"),
        (("depth:shift:3", None, None), "--corrupt: shift strength out of range"),
        (("depth:noise", 0.0, None), "--corrupt-share: expected a fraction in (0, 1], got 0.0"),
        (("depth:noise", None, -1), "--corrupt-seed: expected an integer >= 0"),
        ((None, 0.5, None), "--corrupt-share: needs --corrupt"),
        ((None, None, 2), "--corrupt-seed: needs --corrupt"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(args: tuple, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CorruptSetting.parse(*args)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="^--corrupt: 'audio' is not a modality"):
        CorruptSetting("audio", "noise", 1.0).check(["rgb", "depth"])


def test_auroc_is_sklearns() -> None:
    assert auroc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == 0.75
    rng = np.random.default_rng(0)
    labels, scores = rng.random(50) < 0.4, rng.normal(size=50)
    assert auroc(labels, scores) == roc_auc_score(labels, scores)
    assert auroc([True, True], [0.1, 0.2]) is None
    assert auroc([True, False], [float("nan"), 0.2]) is None


def test_head_scores_are_oriented_anomalous_high() -> None:
    sure, unsure = torch.tensor([[8.0, 0.0, 0.0]]), torch.tensor([[0.1, 0.0, 0.0]])
    for name in ("neg_msp", "energy"):
        assert softmax_scores(unsure)[name] > softmax_scores(sure)[name]
    dense = torch.randn(2, 3, 4, 4)
    per_pixel = -dense.softmax(1).amax(1)
    torch.testing.assert_close(softmax_scores(dense)["neg_msp"], per_pixel.mean((1, 2)))
    torch.testing.assert_close(
        softmax_scores(dense)["energy"], -torch.logsumexp(dense, 1).mean((1, 2))
    )
    labels = torch.tensor([[6.0, -6.0], [0.0, 0.0]])
    assert multilabel_scores(labels)["neg_msp"][1] > multilabel_scores(labels)["neg_msp"][0]
    torch.testing.assert_close(
        multilabel_scores(labels)["energy"],
        -torch.nn.functional.softplus(labels).sum(1),
    )


@dataclass
class _Output:
    logits: torch.Tensor
    bits_per_dim: torch.Tensor | None = None


class _Task:
    def head_scores(self, outputs: _Output, cfg: object) -> dict:
        return softmax_scores(outputs.logits)


def test_detection_summary_wires_scores_blame_and_lines(tmp_path: Path) -> None:
    """Corrupted samples get higher bits/dim and a larger depth gain: AUROC 1 for both, the
    blame is right on every corrupted sample, and the JSONL has one line per sample in order."""
    setting = CorruptSetting("depth", "noise", 1.0)
    detection = Detection(_Task(), None, ["rgb", "depth"], setting)
    detection.gains = [[]]  # one flow
    corrupted = torch.tensor([True, False, True, False, False, True])
    for order in (torch.arange(3), torch.arange(3, 6)):  # two batches
        broken = corrupted[order]
        detection.gains[0].append(torch.stack([0.5 * torch.ones(3), 0.2 + broken.float()], 1))
        outputs = _Output(torch.randn(3, 4), bits_per_dim=1.0 + broken.float())
        detection.update(outputs, {"position": order, "corrupted": broken})
        assert detection.gains[0] == []
    path = tmp_path / "scores.jsonl"
    summary = detection.summary(path)
    assert summary["detection_auroc"]["bits_per_dim"] == 1.0
    assert summary["detection_auroc"]["gain_bits"] == 1.0
    assert set(summary["detection_auroc"]) == {"bits_per_dim", "neg_msp", "energy", "gain_bits"}
    assert summary["blame_accuracy"] == 1.0 and summary["blame_counts"] == {"rgb": 0, "depth": 3}
    assert summary["corrupt"]["samples"] == 3 and summary["scores"] == str(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["position"] for line in lines] == list(range(6))
    assert [line["corrupted"] for line in lines] == corrupted.tolist()
    assert [line["blamed"] for line in lines] == ["depth", "rgb", "depth", "rgb", "rgb", "depth"]
    assert set(lines[0]) == {
        "position", "corrupted", "bits_per_dim", "neg_msp", "energy", "gain_bits", "gains", "blamed"
    }  # fmt: skip
