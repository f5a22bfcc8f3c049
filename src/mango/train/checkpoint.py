"""Checkpoints: atomic writes, weights-only reads, metadata, architecture and version checks.

Every checkpoint mango opens (``eval``, ``predict``, ``train --resume``, Lightning's own restore,
the step probes) is read by :func:`read_checkpoint`, with ``torch.load(weights_only=True)``: a
file can hold tensors and plain data (dicts, lists, strings, numbers), never code. A checkpoint
holds nothing else: the config as JSON-style data and as YAML text, the versions as strings,
Lightning's loop, optimizer and scheduler states.
"""

from __future__ import annotations

import contextlib
import pickle
import platform
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from packaging.version import InvalidVersion, Version
from torch.torch_version import TorchVersion

from mango import __version__
from mango.errors import CheckpointError, OutputError
from mango.io import atomic_save
from mango.models.fusion.filler import is_statistic

#: Earlier mango checkpoints store ``versions["torch"]`` as torch's ``TorchVersion``, a ``str``
#: subclass (now a plain ``str``); admitting it keeps them loadable. Nothing else is admitted.
EARLIER_GLOBALS = [TorchVersion]


def _admitting(classes: list[type]) -> contextlib.AbstractContextManager[Any]:
    """``torch.serialization.safe_globals(classes)`` for one load; torch < 2.5 has no such
    context, and there only what this version writes (plain data and tensors) is read."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return contextlib.nullcontext() if safe_globals is None else safe_globals(classes)


class MangoCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: writes to a temporary file renamed into place, reads weights-only.

    A run killed while saving leaves the previous ``last.ckpt`` intact. Lightning's restore
    (``Trainer.fit(ckpt_path=...)``) reads through :func:`read_checkpoint` whatever
    ``weights_only`` it asks for. A write that fails (an :class:`OutputError`: a full disk, no
    permission) is kept in :attr:`failure` rather than raised, so that rank 0 still reaches the
    barrier after it; :func:`mango.train.callbacks.save_run` then stops every rank with it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failure: OutputError | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        try:
            atomic_save(path, lambda f: torch.save(checkpoint, f))
        except OutputError as error:
            self.failure = error

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path)


def metadata(config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records besides the weights: the full config and the software versions."""
    import lightning

    return {
        "version": __version__,
        "config": config,
        "versions": {
            "mango": __version__,
            "torch": str(torch.__version__),
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a MANGO checkpoint on the CPU, with one-line errors for every way it can be unusable.

    The file is unpickled weights-only: a pickled class or function (what could run code) is
    refused, as :class:`CheckpointError` naming it, before anything of it is called.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with _admitting(EARLIER_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))  # the class or function it would load
        if found is None:
            raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError)") from None
        raise CheckpointError(
            f"{path}: refused: it holds a pickled {found[1]}, which is neither a tensor nor plain "
            "data; checkpoints are read weights-only and nothing from this file was run"
        ) from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__})"
        ) from None
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
        or not isinstance(checkpoint.get("mango"), dict)
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


def saved_step(path: str | Path) -> int:
    """The optimisation step at which the checkpoint ``path`` was written."""
    return int(read_checkpoint(path)["global_step"])


def check_architecture(
    state_dict: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], source: str | Path
) -> None:
    """Raise a one-line CheckpointError unless ``state_dict`` fits ``model_state`` key by key.

    Only the fillers' training statistics may be absent (a checkpoint of an earlier mango,
    :func:`~mango.models.fusion.filler.is_statistic`): the model keeps its own, unestimated."""
    for key, value in model_state.items():
        if key not in state_dict:
            if is_statistic(key):
                continue
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
