"""Checkpoints: atomic writes, metadata (config and versions), architecture and version checks."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from packaging.version import InvalidVersion, Version

from mango import __version__
from mango.errors import CheckpointError
from mango.io import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place.

    A run killed while saving leaves the previous ``last.ckpt`` intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        atomic_save(path, lambda f: torch.save(checkpoint, f))


def metadata(config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records besides the weights: the full config and the software versions."""
    import lightning

    return {
        "version": __version__,
        "config": config,
        "versions": {
            "mango": __version__,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a MANGO checkpoint on the CPU, with one-line errors for every way it can be unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__})"
        ) from None
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "mango" not in checkpoint
    ):
        raise CheckpointError(f"{path}: not a MANGO checkpoint (no 'state_dict'/'mango' entries)")
    written_by = str(checkpoint["mango"].get("version", "0"))
    try:
        newer = Version(written_by) > Version(__version__)
    except InvalidVersion:
        newer = False
    if newer:
        raise CheckpointError(
            f"{path}: written by mango {written_by}, newer than the installed {__version__}; upgrade mango"
        )
    return checkpoint


def check_architecture(
    state_dict: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], source: str | Path
) -> None:
    """Raise a one-line CheckpointError unless ``state_dict`` fits ``model_state`` key by key."""
    for key, value in model_state.items():
        if key not in state_dict:
            raise CheckpointError(
                f"{source}: a different architecture: the checkpoint lacks {key!r}"
            )
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: a different architecture: {key!r} has shape {tuple(state_dict[key].shape)} "
                f"in the checkpoint, {tuple(value.shape)} in the model"
            )
    extra = [k for k in state_dict if k not in model_state]
    if extra:
        raise CheckpointError(f"{source}: a different architecture: unexpected key {extra[0]!r}")


def export_safetensors(
    state_dict: dict[str, torch.Tensor], path: str | Path, config_yaml: str
) -> None:
    """Write the weights as safetensors (atomically), with the run config in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata={"mango_version": __version__, "config": config_yaml})
    atomic_save(path, lambda f: f.write(data))
