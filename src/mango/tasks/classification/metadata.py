"""``metadata.npy`` of the MM-IMDb HDF5 release, read without running code from it.

The release's ``make_dataset.py`` saves ``{"ix_to_word": {int: str}, "word_to_ix": {str: int},
"vocab_size": int, "lookup": float32 array}`` with ``numpy.save``: a pickled 0-d object array.
``numpy.load(allow_pickle=True)`` would call whatever a pickle names; :class:`MetadataUnpickler`
admits only what such a file needs: the builtin containers, strings and numbers (pickle opcodes,
no lookups) and numpy arrays, dtypes and scalars. Any other class or function is refused before
it is called.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metadata.npy"
    >>> np.save(path, {"ix_to_word": {0: "_UNK_", 1: "plot"}, "lookup": np.zeros((1, 2))})
    >>> read_metadata(path)["ix_to_word"]
    {0: '_UNK_', 1: 'plot'}
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mango.tasks.images import BadFileError

#: how numpy's own pickles name what they need to rebuild arrays, dtypes and scalars (numpy 2
#: writes ``numpy._core``, numpy 1 and Python 2 wrote ``numpy.core``)
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (core, "_reconstruct"): _RECONSTRUCT
        for core in ("numpy._core.multiarray", "numpy.core.multiarray")
    },
    **{(core, "scalar"): _SCALAR for core in ("numpy._core.multiarray", "numpy.core.multiarray")},
}
#: ``.npy`` header readers by format version (numpy writes 1.0 for object arrays)
_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a class or function that :class:`MetadataUnpickler` does not admit."""


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers, strings, numbers and numpy arrays (:data:`ADMITTED`)."""

    def find_class(self, module: str, name: str) -> Any:
        admitted = ADMITTED.get((module, name))
        if admitted is None:
            raise RefusedGlobal(f"{module}.{name}")
        return admitted


def read_metadata(path: Path) -> Any:
    """The object pickled in the ``.npy`` file ``path`` (a 0-d object array is unwrapped).

    Python 2 strings are decoded as latin-1, as ``numpy.load(encoding="latin1")`` documents for
    Python 2 files (it keeps the bytes of their arrays intact).

    Raises:
        BadFileError: not an ``.npy`` file, a plain (non-object) array, a damaged pickle, or a
            pickle naming anything outside :data:`ADMITTED` (nothing of it is run).
    """
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in _HEADERS:
                raise BadFileError(path, f".npy format version {version} is not supported")
            _, _, dtype = _HEADERS[version](file)
            if not dtype.hasobject:
                raise BadFileError(
                    path, f"holds a plain {dtype} array, not the release's pickled dict"
                )
            array = MetadataUnpickler(file, encoding="latin1").load()
    except BadFileError:
        raise
    except RefusedGlobal as refused:
        raise BadFileError(
            path,
            f"refused: it holds a pickled {refused}, which is neither a numpy array nor plain "
            "data; nothing from this file was run",
        ) from None
    except Exception as exc:  # a damaged file can raise almost anything (ValueError, EOFError, ...)
        raise BadFileError(path, f"cannot be read as .npy ({type(exc).__name__}: {exc})") from None
    if isinstance(array, np.ndarray) and array.dtype == object and array.ndim == 0:
        return array.item()
    return array
