"""``data.modality_dropout: p`` drops one modality of a share ``p`` of the training samples."""

from __future__ import annotations

import torch

from mango.train.missing import ModalityDropout


def test_dropout_drops_the_asked_share_and_each_modality_alike() -> None:
    dropout = ModalityDropout(lambda sample, generator: sample, ["rgb", "depth"], p=0.1)
    generator = torch.Generator().manual_seed(0)
    drawn = [dropout({}, generator)["present"] for _ in range(4000)]
    rgb = sum(not d["rgb"] for d in drawn)
    depth = sum(not d["depth"] for d in drawn)
    assert all(d["rgb"] or d["depth"] for d in drawn)  # never both
    # binomial(4000, 0.05): sd 14, so ±60 is more than 4 sd
    assert abs(rgb - 200) < 60 and abs(depth - 200) < 60, (rgb, depth)


def test_evaluation_drops_nothing() -> None:
    dropout = ModalityDropout(lambda sample, generator: sample, ["rgb", "depth"], p=1.0)
    assert dropout({}, None)["present"] == {"rgb": True, "depth": True}
