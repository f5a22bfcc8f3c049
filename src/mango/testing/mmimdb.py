"""Tiny MM-IMDb copies in both release formats, for tests, smoke configs and ``mango data check``.

Both writers draw the same movies from ``seed`` (:func:`fixture_movies`), so an HDF5 fixture and
a raw fixture with equal ``sizes`` and ``seed`` hold the same ids, labels, texts and posters. The
data is learnable: each movie's longest plot repeats words tied to its genres and the top half of
its poster is painted in the colour of its first genre.

HDF5 fixture: the keys, dtypes and attributes of the release (``images`` int32 (N, 3, 256, 160)
Caffe BGR minus mean, ``sequences`` vlen int32, ``features`` (N, 300), ``vgg_features``
(N, 4096), ``genres`` int32 with ``attrs['target_names']`` as JSON, ``imdb_ids`` S7, the Fuel
``split`` table) and ``metadata.npy`` with ``ix_to_word`` / ``word_to_ix`` / ``vocab_size``.
Raw fixture: ``dataset/<id>.json`` (1-3 plots of different lengths, raw genres including some of
the 4 dropped ones), ``dataset/<id>.jpeg`` and ``split.json``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from mango.io import atomic_save, atomic_write_bytes, atomic_write_json
from mango.tasks.mmimdb.genres import EXTRA_RAW_GENRES, GENRES, SPLIT_SIZES
from mango.tasks.mmimdb.readers import (
    CAFFE_BGR_MEAN,
    HDF5_FILE,
    METADATA_FILE,
    RAW_FOLDER,
    SPLIT_FILE,
)

#: poster size of the HDF5 release (height, width)
POSTER_SIZE = (256, 160)
_FILLER = ("the", "a", "of", "and", "in", "his", "her", "to", "old", "new", "one", "town")
_UNK = "_UNK_"


def _genre_words(genre: str) -> tuple[str, str, str]:
    """Three lower-case words that signal ``genre`` (e.g. ``scifi``, ``scifi1``, ``scifi2``)."""
    stem = "".join(ch for ch in genre.lower() if ch.isalpha())
    return stem, f"{stem}plot", f"{stem}scene"


def _genre_colour(genre: str) -> tuple[int, int, int]:
    """A fixed RGB colour per genre (distinct, away from 0 and 255)."""
    index = (GENRES + EXTRA_RAW_GENRES).index(genre)
    rng = np.random.default_rng(1000 + index)
    return tuple(int(v) for v in rng.integers(20, 236, size=3))  # type: ignore[return-value]


@dataclass(frozen=True)
class FixtureMovie:
    """One synthetic movie: ``plots`` in json order, raw ``genres``, an RGB uint8 ``poster``."""

    imdb_id: str
    plots: tuple[str, ...]
    genres: tuple[str, ...]
    poster: np.ndarray

    @property
    def longest_plot(self) -> str:
        """The plot the readers use (the first longest one)."""
        return max(self.plots, key=len)


def fixture_movies(sizes: tuple[int, int, int] = (6, 3, 4), seed: int = 0) -> list[FixtureMovie]:
    """The movies of a fixture: ``sizes`` = (train, dev, test), in that row order.

    Example:
        >>> movies = fixture_movies((2, 1, 1), seed=3)
        >>> len(movies), movies[0].poster.shape, movies[0].longest_plot in movies[0].plots
        (4, (256, 160, 3), True)
    """
    rng = np.random.default_rng(seed)
    frequency = np.linspace(3.0, 1.0, len(GENRES))  # frequent genres first, as in the release
    frequency /= frequency.sum()
    movies = []
    for k in range(sum(sizes)):
        count = int(rng.integers(1, 4))
        picked = rng.choice(len(GENRES), size=count, replace=False, p=frequency)
        chosen = [GENRES[i] for i in picked]
        raw = list(chosen)
        if rng.random() < 0.35:
            raw.insert(int(rng.integers(0, len(raw) + 1)), str(rng.choice(EXTRA_RAW_GENRES)))
        words = [w for g in chosen for w in _genre_words(g) for _ in range(2)]
        words += list(rng.choice(_FILLER, size=int(rng.integers(14, 24))))
        rng.shuffle(words)
        longest = " ".join(words)
        # shorter plots: at most 8 filler words (<= 47 characters) vs >= 20 words above
        shorter = [
            " ".join(rng.choice(_FILLER, size=int(rng.integers(3, 9))))
            for _ in range(int(rng.integers(0, 3)))
        ]
        plots = shorter + [longest]
        rng.shuffle(plots)
        poster = np.empty((*POSTER_SIZE, 3), dtype=np.uint8)
        poster[: POSTER_SIZE[0] // 2] = _genre_colour(chosen[0])
        poster[POSTER_SIZE[0] // 2 :] = rng.integers(20, 236, size=3)
        movies.append(FixtureMovie(f"{1000 * seed + k + 1:07d}", tuple(plots), tuple(raw), poster))
    return movies


def _check_sizes(sizes: tuple[int, int, int]) -> None:
    if len(sizes) != len(SPLIT_SIZES) or min(sizes) < 0:
        raise ValueError(f"sizes must be 3 non-negative counts (train, dev, test), got {sizes}")


def write_mmimdb_hdf5_fixture(
    root: str | os.PathLike[str], sizes: tuple[int, int, int] = (6, 3, 4), seed: int = 0
) -> Path:
    """Write ``root/multimodal_imdb.hdf5`` and ``root/metadata.npy``; return ``root``.

    Example:
        >>> import tempfile
        >>> root = write_mmimdb_hdf5_fixture(tempfile.mkdtemp(), sizes=(2, 1, 1))
        >>> sorted(p.name for p in root.iterdir())
        ['metadata.npy', 'multimodal_imdb.hdf5']
    """
    _check_sizes(sizes)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    movies = fixture_movies(sizes, seed)
    rng = np.random.default_rng(seed + 1)
    texts = [m.longest_plot.split() for m in movies]
    vocab = [_UNK] + sorted({w for words in texts for w in words})
    word_to_ix = {w: i for i, w in enumerate(vocab)}
    metadata = {
        "ix_to_word": dict(enumerate(vocab)),
        "word_to_ix": word_to_ix,
        "vocab_size": len(vocab),
        "lookup": rng.standard_normal((len(vocab) - 1, 300)).astype(np.float32),
    }
    atomic_save(root / METADATA_FILE, lambda f: np.save(f, metadata, allow_pickle=True))

    n = len(movies)
    mean = np.asarray(CAFFE_BGR_MEAN).reshape(3, 1, 1)
    images = np.stack([m.poster.transpose(2, 0, 1)[::-1] - mean for m in movies]).astype(np.int32)
    labels = np.stack([[int(g in m.genres) for g in GENRES] for m in movies]).astype(np.int32)
    with h5py.File(root / HDF5_FILE, "w") as f:
        f.create_dataset("images", data=images)
        sequences = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.int32))
        for i, words in enumerate(texts):
            sequences[i] = np.array([word_to_ix[w] for w in words], dtype=np.int32)
        f.create_dataset("features", data=rng.standard_normal((n, 300)).astype(np.float32))
        f.create_dataset("vgg_features", data=rng.random((n, 4096)).astype(np.float32))
        genres = f.create_dataset("genres", data=labels)
        genres.attrs["target_names"] = json.dumps(list(GENRES))
        f.create_dataset("imdb_ids", data=np.array([m.imdb_id for m in movies], dtype="S7"))
        f.attrs["split"] = _fuel_split_table(sizes)
    return root


def _fuel_split_table(sizes: tuple[int, int, int]) -> np.ndarray:
    """The ``split`` attribute that Fuel's ``H5PYDataset.create_split_array`` writes."""
    sources = (
        "features",
        "three_grams",
        "sequences",
        "images",
        "vgg_features",
        "imdb_ids",
        "word_grams",
        "genres",
    )
    dtype = np.dtype(
        [
            ("split", "S5"),
            ("source", "S12"),
            ("start", "i8"),
            ("stop", "i8"),
            ("indices", h5py.ref_dtype),
            ("available", "?"),
            ("comment", "S1"),
        ]
    )
    rows, start = [], 0
    for split, size in zip(SPLIT_SIZES, sizes, strict=True):
        for source in sources:
            rows.append(
                (split.encode(), source.encode(), start, start + size, h5py.Reference(), True, b".")
            )
        start += size
    return np.array(rows, dtype=dtype)


def write_mmimdb_raw_fixture(
    root: str | os.PathLike[str], sizes: tuple[int, int, int] = (6, 3, 4), seed: int = 0
) -> Path:
    """Write ``root/dataset/<id>.json``, ``root/dataset/<id>.jpeg`` and ``root/split.json``.

    Example:
        >>> import tempfile
        >>> root = write_mmimdb_raw_fixture(tempfile.mkdtemp(), sizes=(2, 1, 1))
        >>> len(list((root / "dataset").glob("*.json"))), (root / "split.json").is_file()
        (4, True)
    """
    _check_sizes(sizes)
    root = Path(root)
    folder = root / RAW_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    movies = fixture_movies(sizes, seed)
    for movie in movies:
        record = {
            "title": f"Movie {movie.imdb_id}",
            "imdb_id": movie.imdb_id,
            "plot": list(movie.plots),
            "genres": list(movie.genres),
        }
        atomic_write_json(folder / f"{movie.imdb_id}.json", record)
        buffer = io.BytesIO()
        Image.fromarray(movie.poster).save(buffer, format="JPEG", quality=95)
        atomic_write_bytes(folder / f"{movie.imdb_id}.jpeg", buffer.getvalue())
    split, start = {}, 0
    for name, size in zip(SPLIT_SIZES, sizes, strict=True):
        split[name] = [m.imdb_id for m in movies[start : start + size]]
        start += size
    atomic_write_json(root / SPLIT_FILE, split)
    return root
