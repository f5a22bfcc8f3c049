"""The MM-IMDb dataset: one split of either release format as samples (``docs/data.md``).

The file formats and their decoding are in :mod:`mango.tasks.mmimdb.readers`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mango.tasks.files import is_file
from mango.tasks.mmimdb.genres import GENRES, SPLIT_SIZES, canonical_split
from mango.tasks.mmimdb.readers import (
    HDF5_ERRORS,
    HDF5_FILE,
    METADATA_FILE,
    RAW_FOLDER,
    SPLIT_FILE,
    Format,
    Hdf5Index,
    MMIMDbFileError,
    decode_sequence,
    detect_format,
    genre_vector,
    load_vocabulary,
    read_movie_json,
    read_poster,
    read_split_file,
    strict_size_message,
)
from mango.tasks.mmimdb.transforms import decode_caffe_image, to_network_input


class MMIMDbDataset(Dataset[dict[str, Any]]):
    """One split of MM-IMDb from either release format (detected from the files under ``root``).

    Args:
        root: the data folder.
        split: ``train``, ``dev`` (or ``val``) or ``test``.
        image_size: posters are resized (aspect not kept) to ``image_size x image_size``.
        strict_sizes: require the published split size (:data:`SPLIT_SIZES`); turn off for subsets.

    Items: ``{"image": (3, S, S) float32, "text": str, "labels": (23,) float32, "id": str}``.
    Every bad input raises :class:`~mango.errors.DataError` naming the file.

    Example:
        >>> import tempfile
        >>> from mango.testing.mmimdb import write_mmimdb_raw_fixture
        >>> root = write_mmimdb_raw_fixture(tempfile.mkdtemp())
        >>> data = MMIMDbDataset(root, "val", image_size=32, strict_sizes=False)
        >>> data.format, len(data), tuple(data[0]["image"].shape), tuple(data[0]["labels"].shape)
        ('raw', 3, (3, 32, 32), (23,))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        image_size: int = 224,
        strict_sizes: bool = True,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.root = Path(root)
        self.split = canonical_split(split)
        self.image_size = image_size
        self.format: Format = detect_format(self.root)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        if self.format == "hdf5":
            self._init_hdf5()
        else:
            self._init_raw()
        if strict_sizes and len(self.ids) != SPLIT_SIZES[self.split]:
            raise MMIMDbFileError(self.source, strict_size_message(self.split, len(self.ids)))

    def _init_hdf5(self) -> None:
        self.source = self.root / HDF5_FILE
        index = Hdf5Index(self.source)
        self.vocabulary = load_vocabulary(self.root / METADATA_FILE)
        start, stop = index.ranges[self.split]
        self._rows = np.arange(start, stop)
        self.ids: list[str] = index.ids[start:stop]
        self._labels: np.ndarray | None = index.labels[start:stop]

    def _init_raw(self) -> None:
        self.source = self.root / SPLIT_FILE
        self.ids = read_split_file(self.source)[self.split]
        folder = self.root / RAW_FOLDER
        for movie in self.ids:
            for path in (folder / f"{movie}.json", folder / f"{movie}.jpeg"):
                if not is_file(path):
                    kind = "poster" if path.suffix == ".jpeg" else "movie json"
                    raise MMIMDbFileError(path, f"{kind} not found (listed in {SPLIT_FILE})")
        self._labels = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None  # h5py handles do not pickle
        return state

    def _hdf5(self) -> h5py.File:
        """The open HDF5 file of this process (re-opened after a DataLoader worker fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.source, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close the HDF5 file (it is re-opened on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} movies")
        movie = self.ids[index]
        if self.format == "hdf5":
            row = int(self._rows[index])
            where = f"{self.source} row {row} (imdb id {movie})"
            try:
                file = self._hdf5()
                sequence, pixels = file["sequences"][row], file["images"][row]
            except HDF5_ERRORS as exc:
                raise MMIMDbFileError(where, f"cannot be read ({exc})") from exc
            text = decode_sequence(sequence, self.vocabulary, where)
            rgb = decode_caffe_image(pixels)
            labels = self.label_matrix()[index]
        else:
            folder = self.root / RAW_FOLDER
            text, genres = read_movie_json(folder / f"{movie}.json")
            rgb = read_poster(folder / f"{movie}.jpeg")
            labels = genre_vector(genres)
        return {
            "image": to_network_input(rgb, self.image_size),
            "text": text,
            "labels": torch.from_numpy(np.array(labels, dtype=np.float32)),
            "id": movie,
        }

    def label_matrix(self) -> np.ndarray:
        """(len, 23) float32 multi-hot labels of the split (reads every json once for raw data)."""
        if self._labels is None:
            folder = self.root / RAW_FOLDER
            rows = [genre_vector(read_movie_json(folder / f"{m}.json")[1]) for m in self.ids]
            self._labels = np.stack(rows) if rows else np.zeros((0, len(GENRES)), np.float32)
        return self._labels
