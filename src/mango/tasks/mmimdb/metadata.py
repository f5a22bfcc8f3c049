"""``metadata.npy`` of the MM-IMDb HDF5 release, read without running code from it.

The release's ``make_dataset.py`` saves ``{"ix_to_word": {int: str}, "word_to_ix": {str: int},
"vocab_size": int, "lookup": float32 array}`` with ``numpy.save``: a pickled 0-d object array.
``numpy.load(allow_pickle=True)`` would call whatever a pickle names; :class:`MetadataUnpickler`
admits only what such a file needs: the builtin containers, strings and numbers (pickle opcodes,
no lookups) and numpy arrays, dtypes and scalars (rebuilt by numpy's own functions, which check
the pickled state; object arrays only from pickled lists). Any other class or function is
refused before it is called.

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

from mango.tasks.files import BadFileError


class _Ndarray:
    """What a pickle gets for ``numpy.ndarray``: an argument for :class:`_Reconstruct`, no more.

    The class itself is not handed out: called, ``numpy.ndarray(shape, object, buffer)`` would
    take pointers from the pickle's bytes. No ``__dict__`` (nor the callable's): a pickle cannot
    change them.
    """

    __slots__ = ()


class _Reconstruct:
    """numpy's ``_reconstruct`` (an empty array, then filled from its pickled state), ndarray only."""

    __slots__ = ()
    function = np.empty(0).__reduce__()[0]  # what numpy's own pickles call, found as numpy does

    def __call__(self, subtype: object, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct rebuilds numpy.ndarray only")
        return self.function(np.ndarray, shape, dtype)


_NDARRAY = _Ndarray()
#: what a pickle may name: numpy 2 writes ``numpy._core``, numpy 1 and Python 2 ``numpy.core``
ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    **{
        (core, name): function
        for core in ("numpy._core.multiarray", "numpy.core.multiarray")
        for name, function in (
            ("_reconstruct", _Reconstruct()),
            ("scalar", np.float32(0).__reduce__()[0]),
        )
    },
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
