"""TextTokenEncoder: offline MiniLM loading, shapes, semantic similarity, freezing."""

from __future__ import annotations

import os

import pytest
import torch

from mango.errors import CheckpointError
from mango.models.encoders.text import (
    TextTokenEncoder,
    _hub_offline,
    default_text_model_path,
)


@pytest.fixture(scope="session")
def minilm() -> TextTokenEncoder:
    return TextTokenEncoder(max_length=24)


def _mean_pooled(encoder: TextTokenEncoder, texts: list[str]) -> torch.Tensor:
    tokens, mask = encoder(**encoder.tokenize(texts))
    weights = mask[..., None].float()
    pooled = (tokens * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_default_path_is_the_packaged_minilm() -> None:
    path = default_text_model_path()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_offline_switch_is_set_while_loading_and_restored(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with _hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with _hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ


def test_shapes_and_padding(minilm: TextTokenEncoder) -> None:
    batch = minilm.tokenize(["short", "a somewhat longer sentence " * 20])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (2, 24) and batch["attention_mask"].shape == (2, 24)
    # "[CLS] short [SEP]" = 3 real tokens; the long one is truncated to max_length
    assert batch["attention_mask"].sum(1).tolist() == [3, 24]
    tokens, mask = minilm(**batch)
    assert minilm.dim == 384
    assert tokens.shape == (2, 24, 384) and tokens.dtype == torch.float32
    assert torch.equal(mask, batch["attention_mask"])


def test_similar_sentences_are_closer(minilm: TextTokenEncoder) -> None:
    emb = _mean_pooled(
        minilm,
        [
            "A man is playing a guitar on stage.",
            "Someone performs a song on an acoustic guitar.",
            "The central bank raised interest rates again.",
        ],
    )
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > unrelated + 0.3


def test_frozen_encoder_has_no_grad_and_stays_in_eval(minilm: TextTokenEncoder) -> None:
    parent = torch.nn.Sequential(minilm)
    parent.train()
    assert minilm.training and not minilm.model.training  # dropout stays off
    assert all(not p.requires_grad for p in minilm.parameters())
    tokens, _ = minilm(**minilm.tokenize(["a film about a haunted house"]))
    assert not tokens.requires_grad
    # deterministic in training mode: no dropout
    again, _ = minilm(**minilm.tokenize(["a film about a haunted house"]))
    assert torch.equal(tokens, again)
    parent.eval()


def test_trainable_encoder_gets_gradients() -> None:
    encoder = TextTokenEncoder(max_length=8, trainable=True).train()
    assert encoder.model.training
    tokens, _ = encoder(**encoder.tokenize(["gradients please"]))
    tokens.sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_bad_folder_raises(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        TextTokenEncoder(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        TextTokenEncoder(str(tmp_path))
