"""MM-IMDb readers for both on-disk formats of ``docs/data.md``.

**HDF5 release** (``ROOT/multimodal_imdb.hdf5`` + ``ROOT/metadata.npy``), as written by the
dataset's ``make_dataset.py``:

- ``images`` (N, 3, H, W) int32: Caffe/VGG input, BGR minus the mean (103.939, 116.779, 123.68);
  decoded as ``rgb = (images[::-1] + mean[::-1]) / 255`` clipped to [0, 1];
- ``sequences`` (N,) variable-length int32 word ids; the text is the words
  ``metadata.npy['ix_to_word'][id]`` joined by single spaces (the plot was lower-cased and
  tokenised by the release script);
- ``genres`` (N, 23) int 0/1 with ``attrs['target_names']`` (a JSON list; columns are reordered
  to :data:`GENRES` by name), ``imdb_ids`` (N,) ``S7``;
- split rows from the Fuel ``attrs['split']`` array when present, else the published ranges
  [0, 15552) train, [15552, 18160) dev, [18160, 25959) test.

**Raw release** (``ROOT/dataset/<id>.json``, ``ROOT/dataset/<id>.jpeg``, ``ROOT/split.json``):
the text is the longest entry of the json ``plot`` list (the first one on ties, as the release
script does), the labels are the json ``genres`` that belong to the standard 23.

Both give the same sample (:class:`~mango.tasks.mmimdb.data.MMIMDbDataset`):
``{"image": float32 (3, S, S) ImageNet-normalised RGB, "text": str, "labels": float32 (23,)
multi-hot in GENRES order, "id": str}``.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mango.errors import DataError
from mango.tasks.files import BadFileError, is_file
from mango.tasks.mmimdb.genres import GENRES, SPLIT_SIZES
from mango.tasks.mmimdb.metadata import read_metadata

HDF5_FILE = "multimodal_imdb.hdf5"
METADATA_FILE = "metadata.npy"
RAW_FOLDER = "dataset"
SPLIT_FILE = "split.json"
#: ``metadata.npy`` word ids must lie below this many times the number of words (the release's
#: ids are 0..V-1; a stray huge id would otherwise allocate a giant lookup table).
MAX_ID_SPREAD = 16
#: Per-channel mean subtracted from the BGR pixels of the HDF5 ``images`` (Caffe VGG).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

Format = Literal["hdf5", "raw"]
#: what h5py raises for a damaged file: OSError, or RuntimeError / KeyError from the HDF5
#: library when an object header or link inside the file is corrupt
HDF5_ERRORS = (OSError, RuntimeError, KeyError)
_GENRE_INDEX = {name: i for i, name in enumerate(GENRES)}


class MMIMDbFileError(DataError):
    """A problem ``problem`` with one file ``where``; the message is ``"<where>: <problem>"``."""

    def __init__(self, where: str | os.PathLike[str], problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


def _plain_name(movie: str) -> bool:
    """True for an imdb id usable as a file name inside ``dataset/`` (no folder, no escape)."""
    try:
        size = len(movie.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from the json
        return False
    return 0 < size <= 200 and movie not in (".", "..") and not set(movie) & {"/", "\\", "\0"}


def strict_size_message(split: str, count: int) -> str:
    return (
        f"split {split!r} has {count} movies, expected {SPLIT_SIZES[split]} "
        f"(pass strict_sizes=False / --set data.strict_sizes=false for subsets)"
    )


def detect_format(root: str | os.PathLike[str]) -> Format:
    """``"hdf5"`` when ``root/multimodal_imdb.hdf5`` exists, ``"raw"`` for ``root/dataset`` or
    ``root/split.json``; otherwise :class:`DataError`."""
    root = Path(root)
    if not root.is_dir():
        raise MMIMDbFileError(root, "MM-IMDb data folder does not exist")
    if (root / HDF5_FILE).is_file():
        return "hdf5"
    if (root / RAW_FOLDER).is_dir() or (root / SPLIT_FILE).is_file():
        return "raw"
    raise MMIMDbFileError(
        root,
        f"no MM-IMDb data: expected {HDF5_FILE} + {METADATA_FILE}, "
        f"or {RAW_FOLDER}/<id>.json + {SPLIT_FILE}",
    )


# ---------------------------------------------------------------------------------------------
# labels


def genre_vector(genres: Sequence[str]) -> np.ndarray:
    """Raw genre names -> float32 (23,) multi-hot over :data:`GENRES`; other names are dropped.

    Example:
        >>> v = genre_vector(["Comedy", "Talk-Show", "Film-Noir"])
        >>> v.nonzero()[0].tolist(), v.dtype.name
        ([1, 22], 'float32')
    """
    vector = np.zeros(len(GENRES), dtype=np.float32)
    for name in genres:
        index = _GENRE_INDEX.get(name)
        if index is not None:
            vector[index] = 1.0
    return vector


# ---------------------------------------------------------------------------------------------
# HDF5 release


class Hdf5Index:
    """The validated structure of an HDF5 release (everything but images and sequences).

    Attributes:
        path: the HDF5 file.
        rows: number of movies N.
        ranges: canonical split -> (start, stop) rows.
        ids: (N,) imdb ids as str.
        labels: (N, 23) float32 multi-hot in :data:`GENRES` order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            file = h5py.File(path, "r")
        except HDF5_ERRORS as exc:
            raise MMIMDbFileError(path, f"cannot be opened as HDF5 ({exc})") from exc
        try:
            with file:
                self._read(file)
        except HDF5_ERRORS as exc:  # a readable header, but truncated or corrupt data
            raise MMIMDbFileError(path, f"cannot be read, truncated or corrupt ({exc})") from exc

    def _read(self, file: h5py.File) -> None:
        """Validate the keys of the open ``file`` and read ids, labels and split rows."""
        for key in ("images", "sequences", "genres", "imdb_ids"):
            if key not in file or not isinstance(file[key], h5py.Dataset):
                raise self._fail(f"missing dataset key {key!r}")
        images, sequences, genres, ids = (
            file["images"],
            file["sequences"],
            file["genres"],
            file["imdb_ids"],
        )
        self.rows = int(genres.shape[0]) if genres.ndim else 0
        self._check_images(images)
        self._check_sequences(sequences)
        self.labels = self._read_genres(genres)
        self.ids = self._read_ids(ids)
        self.ranges = self._read_ranges(file)

    def _fail(self, problem: str) -> MMIMDbFileError:
        return MMIMDbFileError(self.path, problem)

    def _check_rows(self, key: str, dataset: h5py.Dataset) -> None:
        if dataset.shape[:1] != (self.rows,):
            raise self._fail(
                f"key {key!r} has shape {dataset.shape}, expected {self.rows} rows like 'genres'"
            )

    def _check_images(self, images: h5py.Dataset) -> None:
        if images.dtype.kind not in "iu":
            raise self._fail(
                f"key 'images' has dtype {images.dtype}, expected int32 (Caffe BGR minus mean)"
            )
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < 1:
            raise self._fail(
                f"key 'images' has shape {images.shape}, expected (N, 3, H, W) with H, W >= 1"
            )
        self._check_rows("images", images)

    def _check_sequences(self, sequences: h5py.Dataset) -> None:
        try:
            base = h5py.check_vlen_dtype(sequences.dtype)
        except ValueError as exc:  # a damaged type header that h5py cannot map to numpy
            raise self._fail(f"key 'sequences' has an unreadable dtype ({exc})") from None
        if base is None or base.kind not in "iu":
            raise self._fail(
                f"key 'sequences' has dtype {sequences.dtype}, expected "
                f"variable-length int32 word ids"
            )
        self._check_rows("sequences", sequences)

    def _read_genres(self, genres: h5py.Dataset) -> np.ndarray:
        if genres.dtype.kind not in "iub":
            raise self._fail(f"key 'genres' has dtype {genres.dtype}, expected int32 0/1")
        if genres.ndim != 2 or genres.shape[1] != len(GENRES):
            raise self._fail(f"key 'genres' has shape {genres.shape}, expected (N, {len(GENRES)})")
        values = genres[()]
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise self._fail(f"key 'genres' row {row} holds {values[bad][0]}, expected 0 or 1")
        order = self._genre_columns(genres)
        return values[:, order].astype(np.float32)

    def _genre_columns(self, genres: h5py.Dataset) -> np.ndarray:
        """File column of each name in :data:`GENRES` (from ``attrs['target_names']``)."""
        names = genres.attrs.get("target_names")
        if names is None:
            return np.arange(len(GENRES))
        try:
            if isinstance(names, bytes):
                names = names.decode("utf-8")
            listed = (
                json.loads(names)
                if isinstance(names, str)
                else [n.decode("utf-8") if isinstance(n, bytes) else n for n in np.ravel(names)]
            )
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise self._fail("attribute genres.target_names is not a JSON list of names") from exc
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise self._fail("attribute genres.target_names is not a list of genre names")
        if sorted(listed) != sorted(GENRES):
            unknown = sorted(set(listed) ^ set(GENRES))
            raise self._fail(
                f"attribute genres.target_names differs from the standard 23 genres "
                f"(mismatch: {', '.join(unknown[:4])})"
            )
        return np.array([listed.index(name) for name in GENRES])

    def _read_ids(self, ids: h5py.Dataset) -> list[str]:
        if ids.dtype.kind != "S" and h5py.check_string_dtype(ids.dtype) is None:
            raise self._fail(f"key 'imdb_ids' has dtype {ids.dtype}, expected S7 strings")
        if ids.ndim != 1:
            raise self._fail(f"key 'imdb_ids' has shape {ids.shape}, expected ({self.rows},)")
        self._check_rows("imdb_ids", ids)
        decoded = []
        for row, value in enumerate(ids[()]):
            try:
                decoded.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            except UnicodeDecodeError as exc:
                raise self._fail(f"key 'imdb_ids' row {row} is not UTF-8 text") from exc
        return decoded

    def _read_ranges(self, file: h5py.File) -> dict[str, tuple[int, int]]:
        """Split rows from the Fuel ``split`` attribute, else the published row ranges."""
        ranges: dict[str, tuple[int, int]] = {}
        if "split" in file.attrs:
            table = file.attrs["split"]
            try:
                rows = zip(
                    table["split"], table["source"], table["start"], table["stop"], strict=True
                )
                for name, source, start, stop in rows:
                    name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
                    source = source.decode("utf-8") if isinstance(source, bytes) else str(source)
                    if source == "genres" and name in SPLIT_SIZES:
                        ranges[name] = (operator.index(start), operator.index(stop))
            except (ValueError, KeyError, IndexError, TypeError) as exc:  # incl. UnicodeDecodeError
                raise self._fail(
                    "attribute 'split' is not a Fuel split table "
                    "(fields split, source as UTF-8 text, start, stop as integers)"
                ) from exc
            missing = [s for s in SPLIT_SIZES if s not in ranges]
            if missing:
                raise self._fail(f"attribute 'split' has no {missing[0]!r} rows for 'genres'")
        else:
            start = 0
            for name, size in SPLIT_SIZES.items():
                ranges[name] = (min(start, self.rows), min(start + size, self.rows))
                start += size
        for name, (start, stop) in ranges.items():
            if not 0 <= start <= stop <= self.rows:
                raise self._fail(
                    f"split {name!r} rows [{start}, {stop}) outside the "
                    f"{self.rows} rows of the file"
                )
        return ranges


def load_vocabulary(path: Path) -> np.ndarray:
    """``metadata.npy['ix_to_word']`` as an object array indexed by word id (None for gaps)."""
    if not path.is_file():
        raise MMIMDbFileError(path, "file not found (the vocabulary of the HDF5 'sequences')")
    try:
        metadata = read_metadata(path)  # never runs code from the file
    except BadFileError as error:
        raise MMIMDbFileError(path, error.problem) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("ix_to_word"), dict):
        raise MMIMDbFileError(path, "expected a dict with key 'ix_to_word' (id -> word)")
    ix_to_word: dict[Any, Any] = metadata["ix_to_word"]
    try:
        ids = [int(i) for i in ix_to_word]
    except (TypeError, ValueError, OverflowError) as exc:
        raise MMIMDbFileError(path, "'ix_to_word' keys must be integer word ids") from exc
    if not ids or min(ids) < 0:
        raise MMIMDbFileError(path, "'ix_to_word' is empty or has negative ids")
    if max(ids) > MAX_ID_SPREAD * len(ids):
        raise MMIMDbFileError(
            path, f"'ix_to_word' ids are too sparse (largest id {max(ids)} for {len(ids)} words)"
        )
    vocabulary = np.full(max(ids) + 1, None, dtype=object)
    for i, word in ix_to_word.items():
        vocabulary[int(i)] = str(word)
    return vocabulary


def decode_sequence(ids: np.ndarray, vocabulary: np.ndarray, where: str) -> str:
    """Word ids -> the words joined by spaces; unknown ids or an empty sequence raise."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        raise MMIMDbFileError(where, "empty plot (no word ids)")
    bad = (ids < 0) | (ids >= len(vocabulary))
    words = vocabulary[np.where(bad, 0, ids)]
    bad |= np.equal(words, None)
    if bad.any():
        raise MMIMDbFileError(where, f"word id {ids[bad][0]} is not in {METADATA_FILE} ix_to_word")
    return " ".join(words.tolist())


# ---------------------------------------------------------------------------------------------
# raw release


def read_split_file(path: Path) -> dict[str, list[str]]:
    """``split.json`` -> canonical split -> list of imdb ids (validated, no duplicates)."""
    if not is_file(path):
        raise MMIMDbFileError(path, "file not found")
    table = _read_json(path)
    if not isinstance(table, dict):
        raise MMIMDbFileError(
            path, 'expected an object {"train": [...], "dev": [...], "test": [...]}'
        )
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLIT_SIZES:
        ids = table.get(split)
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise MMIMDbFileError(path, f"key {split!r} must be a list of imdb id strings")
        for movie in ids:
            if not _plain_name(movie):
                raise MMIMDbFileError(
                    path, f"key {split!r}: imdb id {movie[:40]!r} is not a plain file name"
                )
            if movie in seen:
                raise MMIMDbFileError(
                    path, f"imdb id {movie!r} appears twice ({seen[movie]} and {split})"
                )
            seen[movie] = split
        splits[split] = ids
    return splits


def read_movie_json(path: Path) -> tuple[str, list[str]]:
    """One raw json -> (longest plot, raw genre names)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise MMIMDbFileError(path, "expected a JSON object with keys 'plot' and 'genres'")
    plots, genres = data.get("plot"), data.get("genres")
    if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
        raise MMIMDbFileError(path, "key 'plot' must be a list of strings")
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        raise MMIMDbFileError(path, "key 'genres' must be a list of strings")
    if not plots:
        raise MMIMDbFileError(path, "empty plot (key 'plot' is an empty list)")
    longest = plots[int(np.argmax([len(p) for p in plots]))]
    if not longest.strip():
        raise MMIMDbFileError(path, "empty plot (the longest plot is blank)")
    try:
        longest.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MMIMDbFileError(path, "the longest plot is not valid Unicode") from exc
    return longest, genres


def _read_json(path: Path) -> Any:
    """The parsed json file; missing, unreadable, not UTF-8 or not JSON raise (one line)."""
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise MMIMDbFileError(path, "file is empty")
        return json.loads(text)
    except MMIMDbFileError:
        raise
    except FileNotFoundError as exc:
        raise MMIMDbFileError(path, "file not found") from exc
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, a folder
        raise MMIMDbFileError(path, f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise MMIMDbFileError(path, "not valid JSON (nested too deeply)") from exc


def read_poster(path: Path) -> Tensor:
    """A poster jpeg -> float32 RGB (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise MMIMDbFileError(path, "poster not found") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MMIMDbFileError(path, f"poster cannot be decoded as an image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise MMIMDbFileError(path, f"poster is too large to decode ({exc})") from exc
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
