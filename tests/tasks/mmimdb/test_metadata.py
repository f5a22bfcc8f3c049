"""``metadata.npy``: the release's pickled dict reads exactly, anything that could run code is refused."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from mango.errors import DataError
from mango.tasks.files import BadFileError
from mango.tasks.mmimdb.data import MMIMDbDataset
from mango.tasks.mmimdb.metadata import read_metadata
from mango.tasks.mmimdb.readers import METADATA_FILE


def _release_metadata() -> dict:
    """What the release's make_dataset.py saves (a tiny vocabulary)."""
    words = ["_UNK_", "the", "café", "plot"]
    return {
        "ix_to_word": dict(enumerate(words)),
        "word_to_ix": {w: i for i, w in enumerate(words)},
        "vocab_size": len(words),
        "lookup": np.random.default_rng(0).standard_normal((3, 300)).astype(np.float32),
    }


def _assert_same(read: dict, written: dict) -> None:
    assert read.keys() == written.keys()
    assert read["ix_to_word"] == written["ix_to_word"]
    assert read["word_to_ix"] == written["word_to_ix"]
    assert read["vocab_size"] == written["vocab_size"]
    assert read["lookup"].dtype == np.float32
    assert np.array_equal(read["lookup"], written["lookup"])


def test_the_release_dict_reads_exactly(tmp_path: Path) -> None:
    path = tmp_path / METADATA_FILE
    written = {**_release_metadata(), "count": np.int64(7), "nested": [(1, 2.5, None, True)]}
    np.save(path, written, allow_pickle=True)
    read = read_metadata(path)
    _assert_same({k: read[k] for k in _release_metadata()}, _release_metadata())
    assert read["count"] == 7 and read["count"].dtype == np.int64
    assert read["nested"] == [(1, 2.5, None, True)]


class Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (BINSTRING), as Python 2's numpy.save did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def test_a_python2_numpy1_file_reads_exactly(tmp_path: Path) -> None:
    """Protocol 2, ``numpy.core`` names, array bytes as Python 2 strings (decoded latin-1)."""
    written = _release_metadata()
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(np.array(written, dtype=object))
    data = buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and pickle.BINSTRING in data
    path = tmp_path / METADATA_FILE
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        file.write(data)
    _assert_same(read_metadata(path), written)


def test_pickled_code_is_refused_without_running(hdf5_copy: Path, payload) -> None:
    path = hdf5_copy / METADATA_FILE
    np.save(path, {**_release_metadata(), "extra": payload}, allow_pickle=True)
    with pytest.raises(DataError) as error:
        MMIMDbDataset(hdf5_copy, "train", image_size=8, strict_sizes=False)
    message = str(error.value)
    assert message.startswith(f"{path}: refused: it holds a pickled builtins.exec"), message
    assert "nothing from this file was run" in message and "\n" not in message
    assert not payload.marker.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (np.arange(3.0), "holds a plain float64 array, not the release's pickled dict"),
        (pickle.dumps({"ix_to_word": {0: "a"}}), "cannot be read as .npy (ValueError"),
        (b"PK\x03\x04 an npz archive", "cannot be read as .npy (ValueError"),
    ],
)
def test_other_files_are_one_line_errors(tmp_path: Path, content, problem: str) -> None:
    path = tmp_path / METADATA_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(BadFileError) as error:
        read_metadata(path)
    assert str(error.value).startswith(f"{path}: {problem}"), error.value


class ArrayOverBytes:
    """Pickles as ``numpy.ndarray((1,), object, buffer)``: an object array whose pointers come
    from the file's bytes (zero here, so a reader that allowed it would return None, not crash)."""

    def __reduce__(self):
        return np.ndarray, ((1,), "O", b"\x00" * 8)


def test_numpy_ndarray_cannot_be_called_from_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / METADATA_FILE
    np.save(path, {"ix_to_word": {0: "a"}, "array": ArrayOverBytes()}, allow_pickle=True)
    assert np.load(path, allow_pickle=True).item()["array"][0] is None  # a pointer, read as None
    with pytest.raises(BadFileError) as error:
        read_metadata(path)
    assert str(error.value).startswith(f"{path}: cannot be read as .npy (TypeError"), error.value
