"""Reading user-supplied weight files with one-line errors (shared by the encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mango.errors import CheckpointError


def read_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """Load a torch state dict from ``path`` on the CPU (``weights_only``).

    A ``{"state_dict": {...}}`` wrapper is unwrapped. ``what`` names the weights in errors
    (e.g. ``"MobileNetV2"``).

    Raises:
        CheckpointError: the file is missing, unreadable, or does not hold a dict.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: {what} weights file not found")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"{file}: cannot be read as a torch state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a state dict, found {type(state).__name__}")
    return state
