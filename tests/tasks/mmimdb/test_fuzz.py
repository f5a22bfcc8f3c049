"""Fuzzing the MM-IMDb readers (HDF5 and raw releases) and `data check` with random corruptions.

Property: reading every movie of every split either gives well-typed samples (the text and labels
the files hold, a finite poster tensor) or raises a one-line DataError that names the broken file
under the data root; ``check_mmimdb`` never raises, names files under the root, and reports an
error whenever the reader refuses the data (it may refuse more: overlapping splits, values
outside the Caffe range, duplicate ids).
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mango.errors import DataError
from mango.tasks.mmimdb.check import check_mmimdb
from mango.tasks.mmimdb.data import MMIMDbDataset
from mango.tasks.mmimdb.genres import GENRES
from mango.tasks.mmimdb.readers import (
    HDF5_FILE,
    METADATA_FILE,
    SPLIT_FILE,
    genre_vector,
)
from mango.testing.mmimdb import write_mmimdb_raw_fixture

IMAGE_SIZE = 8
SPLITS = ("train", "dev", "test")
ROWS = 4  # movies in the HDF5 file: 2 train, 1 dev, 1 test
VOCABULARY = ("_UNK_", "a", "man", "dog", "city", "night")
SEQUENCES = ((1, 2), (3,), (4, 5, 1), (2, 2, 2))
IDS = tuple(f"{row + 1:07d}" for row in range(ROWS))


# ---------------------------------------------------------------------------------------------
# shared property


def read_everything(root: Path) -> tuple[list[dict], DataError | None]:
    """Every movie of every split, or the first DataError (anything else propagates)."""
    samples: list[dict] = []
    try:
        for split in SPLITS:
            data = MMIMDbDataset(root, split, image_size=IMAGE_SIZE, strict_sizes=False)
            samples.extend(data[index] for index in range(len(data)))
            assert data.label_matrix().shape == (len(data), len(GENRES))
    except DataError as error:
        return samples, error
    return samples, None


def assert_well_typed(sample: dict) -> None:
    image, labels, text = sample["image"], sample["labels"], sample["text"]
    assert image.dtype == torch.float32 and image.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert bool(torch.isfinite(image).all())
    assert labels.dtype == torch.float32 and labels.shape == (len(GENRES),)
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    assert isinstance(text, str) and text.strip()
    text.encode("utf-8")  # no lone surrogates: every tokenizer can take it
    assert isinstance(sample["id"], str)


def assert_names_file(message: str, root: Path, named: Path | None = None) -> None:
    """One line, a file under the data root first, and ``named`` somewhere in it."""
    assert message and "\n" not in message, message
    assert message.startswith(str(root)), message
    assert named is None or str(named) in message, (named, message)


def check_agrees(root: Path, error: DataError | None, named: Path | None = None) -> None:
    report = check_mmimdb(root, workers=2)
    for line in report.errors:
        assert_names_file(line, root)
    if error is not None:
        assert not report.ok, f"reader: {error}; check found nothing"
        if named is not None:
            assert any(str(named) in line for line in report.errors), report.errors


@contextmanager
def temporary_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        yield root


# ---------------------------------------------------------------------------------------------
# HDF5 release

MISSING = "missing"  # the key is not written
GROUP = "group"  # the key is a group, not a dataset


def fuel_table(ranges: dict[str, tuple[Any, Any]], dtype: str = "i8") -> np.ndarray:
    """A Fuel ``split`` attribute with one ``genres`` row per split."""
    table = np.dtype([("split", "S5"), ("source", "S12"), ("start", dtype), ("stop", dtype)])
    return np.array([(s.encode(), b"genres", *ranges[s]) for s in ranges], dtype=table)


def clean_hdf5() -> dict[str, Any]:
    """The parts of a valid HDF5 release: datasets, attributes and ``metadata.npy``."""
    rng = np.random.default_rng(0)
    genres = np.zeros((ROWS, len(GENRES)), dtype=np.int32)
    genres[np.arange(ROWS), [0, 5, 22, 9]] = 1
    genres[0, 1] = 1
    return {
        "images": rng.integers(-100, 120, (ROWS, 3, 6, 4)).astype(np.int32),
        "sequences": [np.array(s, dtype=np.int32) for s in SEQUENCES],
        "genres": genres,
        "imdb_ids": np.array(IDS, dtype="S7"),
        "target_names": json.dumps(list(GENRES)),
        "split": fuel_table({"train": (0, 2), "dev": (2, 3), "test": (3, 4)}),
        "metadata": {"ix_to_word": dict(enumerate(VOCABULARY))},
    }


def write_hdf5(root: Path, parts: dict[str, Any]) -> None:
    with h5py.File(root / HDF5_FILE, "w") as file:
        for key in ("images", "sequences", "genres", "imdb_ids"):
            value = parts[key]
            if isinstance(value, str) and value == MISSING:
                continue
            if isinstance(value, str) and value == GROUP:
                file.create_group(key)
            elif isinstance(value, list):  # variable-length rows
                base = value[0].dtype if value else np.dtype(np.int32)
                data = file.create_dataset(key, (len(value),), dtype=h5py.vlen_dtype(base))
                for row, item in enumerate(value):
                    data[row] = item
            else:
                file.create_dataset(key, data=value)
        names = parts["target_names"]
        if not (isinstance(names, str) and names == MISSING) and "genres" in file:
            file["genres"].attrs["target_names"] = names
        if not (isinstance(parts["split"], str) and parts["split"] == MISSING):
            file.attrs["split"] = parts["split"]
    metadata = parts["metadata"]
    if isinstance(metadata, bytes):
        (root / METADATA_FILE).write_bytes(metadata)
    elif not (isinstance(metadata, str) and metadata == MISSING):
        np.save(root / METADATA_FILE, metadata, allow_pickle=True)


def _shuffled_names(parts: dict[str, Any], as_bytes: bool) -> dict[str, Any]:
    """Genre columns in another order, named so by target_names: the labels must not change."""
    order = np.random.default_rng(1).permutation(len(GENRES))
    names = [GENRES[i] for i in order]
    parts["genres"] = parts["genres"][:, order]
    parts["target_names"] = np.array(names, dtype="S12") if as_bytes else json.dumps(names)
    return parts


def _vlen(rows: list[list[int]], dtype: str) -> list[np.ndarray]:
    return [np.array(row, dtype=dtype) for row in rows]


#: (key, variant) -> how the variant changes the clean parts. Variants that keep the data
#: valid (and so must read to the clean samples) are listed in VALID.
HDF5_VARIANTS: dict[tuple[str, str], Any] = {
    ("images", "missing"): MISSING,
    ("images", "group"): GROUP,
    ("images", "float nan"): lambda v: np.where(v > 0, np.nan, v).astype(np.float32),
    ("images", "float64"): lambda v: v.astype(np.float64),
    ("images", "bool"): lambda v: v > 0,
    ("images", "strings"): lambda v: np.full(v.shape[:1], b"x"),
    ("images", "int8"): lambda v: v.clip(-128, 127).astype(np.int8),
    ("images", "uint64 max"): lambda v: np.full(v.shape, 2**64 - 1, dtype=np.uint64),
    ("images", "int32 extremes"): lambda v: np.where(v > 0, 2**31 - 1, -(2**31)).astype(np.int32),
    ("images", "zero height"): lambda v: np.zeros((ROWS, 3, 0, 4), np.int32),
    ("images", "zero width"): lambda v: np.zeros((ROWS, 3, 6, 0), np.int32),
    ("images", "one pixel"): lambda v: v[:, :, :1, :1],
    ("images", "four channels"): lambda v: np.concatenate([v, v[:, :1]], axis=1),
    ("images", "rows short"): lambda v: v[:-1],
    ("images", "3-d"): lambda v: v[:, :, 0],
    ("images", "scalar"): lambda v: np.int32(3),
    ("sequences", "missing"): MISSING,
    ("sequences", "group"): GROUP,
    ("sequences", "fixed ints"): lambda v: np.ones((ROWS, 3), np.int32),
    ("sequences", "vlen float"): lambda v: _vlen([[1.5]] * ROWS, "f4"),
    ("sequences", "empty row"): lambda v: [*v[:2], np.zeros(0, np.int32), *v[3:]],
    ("sequences", "negative id"): lambda v: _vlen([[1], [-1], [2], [3]], "i4"),
    ("sequences", "huge id"): lambda v: _vlen([[1], [2], [2**62], [3]], "i8"),
    ("sequences", "uint64 max"): lambda v: _vlen([[2**64 - 1]] * ROWS, "u8"),
    ("sequences", "uint8"): lambda v: [row.astype(np.uint8) for row in v],
    ("sequences", "rows extra"): lambda v: [*v, v[0]],
    ("genres", "missing"): MISSING,
    ("genres", "group"): GROUP,
    ("genres", "float nan"): lambda v: np.where(v > 0, np.nan, 0.0),
    ("genres", "float inf"): lambda v: np.where(v > 0, np.inf, 0.0).astype(np.float32),
    ("genres", "bool"): lambda v: v.astype(bool),
    ("genres", "int8"): lambda v: v.astype(np.int8),
    ("genres", "two"): lambda v: v * 2,
    ("genres", "minus one"): lambda v: -v,
    ("genres", "22 columns"): lambda v: v[:, :22],
    ("genres", "1-d"): lambda v: v[:, 0],
    ("genres", "no rows"): lambda v: v[:0],
    ("genres", "scalar"): lambda v: np.int32(1),
    ("imdb_ids", "missing"): MISSING,
    ("imdb_ids", "group"): GROUP,
    ("imdb_ids", "integers"): lambda v: np.arange(ROWS),
    ("imdb_ids", "vlen strings"): lambda v: np.array(IDS, dtype=h5py.string_dtype()),
    ("imdb_ids", "invalid utf-8"): lambda v: np.array([b"\xff\xfe", *v[1:]], dtype="S7"),
    ("imdb_ids", "2-d"): lambda v: np.stack([v, v], axis=1),
    ("imdb_ids", "rows short"): lambda v: v[:-1],
    ("target_names", "missing"): MISSING,
    ("target_names", "shuffled json"): lambda p: _shuffled_names(p, as_bytes=False),
    ("target_names", "shuffled bytes"): lambda p: _shuffled_names(p, as_bytes=True),
    ("target_names", "json number"): "5",
    ("target_names", "json null"): "null",
    ("target_names", "json object"): json.dumps(dict.fromkeys(GENRES, 0)),
    ("target_names", "json numbers"): json.dumps(list(range(23))),
    ("target_names", "not json"): ",".join(GENRES),
    ("target_names", "invalid utf-8"): np.bytes_(b"\xff\xfe[]"),
    ("target_names", "one missing"): json.dumps(list(GENRES[:-1])),
    ("target_names", "integer"): np.int64(5),
    ("split", "missing"): MISSING,
    ("split", "integer"): np.int64(5),
    ("split", "string"): "train",
    ("split", "no stop field"): np.array(
        [(b"train", b"genres", 0)], dtype=[("split", "S5"), ("source", "S12"), ("start", "i8")]
    ),
    ("split", "start after stop"): fuel_table({"train": (2, 0), "dev": (2, 3), "test": (3, 4)}),
    ("split", "stop past the end"): fuel_table({"train": (0, 2), "dev": (2, 3), "test": (3, 9)}),
    ("split", "negative start"): fuel_table({"train": (-1, 2), "dev": (2, 3), "test": (3, 4)}),
    ("split", "nan rows"): fuel_table(
        {"train": (np.nan, 2), "dev": (2, 3), "test": (3, 4)}, dtype="f8"
    ),
    ("split", "inf rows"): fuel_table(
        {"train": (0, np.inf), "dev": (2, 3), "test": (3, 4)}, dtype="f8"
    ),
    ("split", "no dev"): fuel_table({"train": (0, 2), "test": (3, 4)}),
    ("split", "overlap"): fuel_table({"train": (0, 3), "dev": (2, 3), "test": (3, 4)}),
    ("split", "invalid utf-8"): lambda v: _bad_split_name(v),
    ("metadata", "missing"): MISSING,
    ("metadata", "random bytes"): b"\x80\x04\x95 not a pickle",
    ("metadata", "garbage"): b"garbage that is neither npy nor pickle",
    ("metadata", "pickled set"): pickle.dumps({1, 2}),
    ("metadata", "float array"): np.arange(3.0),
    ("metadata", "no ix_to_word"): {"word_to_ix": {"a": 1}},
    ("metadata", "ix_to_word list"): {"ix_to_word": list(VOCABULARY)},
    ("metadata", "inf key"): {"ix_to_word": {float("inf"): "x", **dict(enumerate(VOCABULARY))}},
    ("metadata", "nan key"): {"ix_to_word": {float("nan"): "x", **dict(enumerate(VOCABULARY))}},
    ("metadata", "negative key"): {"ix_to_word": {-1: "x", **dict(enumerate(VOCABULARY))}},
    ("metadata", "huge key"): {"ix_to_word": {10**12: "x", **dict(enumerate(VOCABULARY))}},
    ("metadata", "string keys"): {"ix_to_word": {str(i): w for i, w in enumerate(VOCABULARY)}},
    ("metadata", "empty"): {"ix_to_word": {}},
}
#: variants after which the data is still valid: they must read (to the clean text and labels)
VALID = {
    ("images", "int8"),
    ("images", "one pixel"),
    ("images", "uint64 max"),  # clipped to white (the check reports the values)
    ("images", "int32 extremes"),
    ("sequences", "uint8"),
    ("genres", "bool"),
    ("genres", "int8"),
    ("imdb_ids", "vlen strings"),
    ("target_names", "missing"),
    ("target_names", "shuffled json"),
    ("target_names", "shuffled bytes"),
    ("split", "missing"),  # the published row ranges: all 4 rows are train
    ("split", "overlap"),  # the reader reads it; the check reports the overlap
    ("metadata", "string keys"),
}


def _bad_split_name(table: np.ndarray) -> np.ndarray:
    table = table.copy()
    table["split"][0] = b"\xff\xfe"
    return table


@pytest.fixture(scope="module")
def clean_samples() -> dict[str, dict]:
    """The samples of the clean HDF5 parts, by imdb id."""
    with temporary_root() as root:
        write_hdf5(root, clean_hdf5())
        samples, error = read_everything(root)
    assert error is None and len(samples) == ROWS
    return {sample["id"]: sample for sample in samples}


@example(change=("images", "zero height"), damage=None, offset=0.0)
@example(change=("sequences", "vlen float"), damage="flip", offset=0.15115213600044178)
@example(change=("target_names", "json object"), damage=None, offset=0.0)
@example(change=("metadata", "inf key"), damage=None, offset=0.0)
@settings(max_examples=60, deadline=None)
@given(
    change=st.sampled_from(sorted(HDF5_VARIANTS)),
    damage=st.sampled_from([None, None, None, "truncate", "flip"]),
    offset=st.floats(0.0, 1.0),
)
def test_hdf5_variant_gives_the_clean_samples_or_a_data_error(
    change, damage, offset, clean_samples
):
    key = change[0]
    parts = clean_hdf5()
    edit = HDF5_VARIANTS[change]
    if key == "target_names" and callable(edit):
        parts = edit(parts)
    else:
        parts[key] = edit(parts[key]) if callable(edit) else edit
    with temporary_root() as root:
        write_hdf5(root, parts)
        hdf5 = root / HDF5_FILE
        if damage is not None:
            data = bytearray(hdf5.read_bytes())
            cut = int(offset * (len(data) - 1))
            if damage == "truncate":
                del data[cut:]
            else:
                for step in range(8):
                    data[(cut + 104729 * step) % len(data)] ^= 0x5A
            hdf5.write_bytes(bytes(data))

        samples, error = read_everything(root)
        if error is None:
            for sample in samples:
                assert_well_typed(sample)
            if damage is None:  # every movie, with the text and labels the file holds
                assert {s["id"] for s in samples} == set(IDS)
                for sample in samples:
                    clean = clean_samples[sample["id"]]
                    assert sample["text"] == clean["text"]
                    assert torch.equal(sample["labels"], clean["labels"])
        else:
            assert change not in VALID or damage is not None, str(error)
            assert_names_file(str(error), root)
        check_agrees(root, error)


# ---------------------------------------------------------------------------------------------
# raw release


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw fixture with 2 train, 1 dev and 1 test movie; do not modify."""
    return write_mmimdb_raw_fixture(tmp_path_factory.mktemp("mmimdb_raw_fuzz"), sizes=(2, 1, 1))


def movie_ids(root: Path) -> list[str]:
    table = json.loads((root / SPLIT_FILE).read_text())
    return [movie for split in SPLITS for movie in table[split]]


#: JSON values of every type, nested a little
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
#: strings a plot or genre list may hold: blank, unicode, lone surrogates, genre names
STRINGS = st.one_of(
    st.sampled_from(["", "  ", "A man.", "\ud800 broken", "\u2028", *GENRES[:3], "Talk-Show"]),
    st.text(max_size=20),
)


def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


#: whole files that are no JSON object: nested deeper than the parser allows, broken, empty
RAW_TEXTS = (
    b"[" * 100_000,
    b'{"plot": ["a"], "genres": [' * 20_000,
    b"{broken",
    b"",
    b"NaN",
    b"\xff\xfe{}",
)


@example(record=RAW_TEXTS[0])
@example(record={"plot": ["\ud800 broken"], "genres": ["Drama"]})
@settings(max_examples=40, deadline=None)
@given(
    record=st.one_of(
        st.fixed_dictionaries(
            {"plot": st.lists(STRINGS, max_size=3), "genres": st.lists(STRINGS, max_size=3)}
        ),
        st.fixed_dictionaries({"plot": JSON_VALUES, "genres": JSON_VALUES}),
        JSON_VALUES,
        st.sampled_from([*RAW_TEXTS, b'{"plot": ["caf\xe9"], "genres": []}']),  # latin-1
    ),
)
def test_movie_json_gives_its_plot_and_genres_or_a_data_error(record, raw_root, fuzz_files):
    with fuzz_files.private_copy(raw_root) as root:
        movie = movie_ids(root)[1]
        path = root / "dataset" / f"{movie}.json"
        if isinstance(record, bytes):
            path.write_bytes(record)
        else:
            path.write_text(json_text(record), encoding="utf-8")

        samples, error = read_everything(root)
        plots = record.get("plot") if isinstance(record, dict) else None
        genres = record.get("genres") if isinstance(record, dict) else None
        valid = (
            isinstance(plots, list)
            and isinstance(genres, list)
            and bool(plots)
            and all(isinstance(p, str) for p in plots + genres)
            and max(plots, key=len).strip() != ""
            and "\ud800" not in max(plots, key=len)
        )
        if valid:
            assert error is None, str(error)
            (sample,) = [s for s in samples if s["id"] == movie]
            assert_well_typed(sample)
            assert sample["text"] == max(plots, key=len)
            assert sample["labels"].tolist() == genre_vector(genres).tolist()
        else:
            assert error is not None, record
            assert_names_file(str(error), root, path)
        check_agrees(root, error, path if error is not None else None)


#: imdb ids for split.json: good ones, unknown, escaping the folder, too long, not strings
IDS_FIELD = st.one_of(
    st.sampled_from(["GOOD0", "GOOD1", "GOOD2", "GOOD3"]),
    st.sampled_from(
        ["9999999", "../dataset/GOOD0", "/etc/passwd", "a" * 300, "a\x00b", "", " ", ".", ".."]
    ),
    JSON_VALUES,
)


def real_ids(ids: Any, good: list[str]) -> Any:
    """``GOODk`` -> the k-th real imdb id inside every string of a split list."""
    if not isinstance(ids, list):
        return ids
    for k, movie in enumerate(good):
        ids = [i.replace(f"GOOD{k}", movie) if isinstance(i, str) else i for i in ids]
    return ids


@example(table={"train": ["a" * 300], "dev": [], "test": []})  # name too long for the OS
@example(table={"train": ["../dataset/GOOD0"], "dev": [], "test": []})  # escapes the folder
@example(table=RAW_TEXTS[0])
@settings(max_examples=40, deadline=None)
@given(
    table=st.one_of(
        st.fixed_dictionaries(
            {split: st.lists(IDS_FIELD, max_size=3) for split in SPLITS},
            optional={"extra": JSON_VALUES},
        ),
        JSON_VALUES,
        st.sampled_from(RAW_TEXTS),
    ),
)
def test_split_file_gives_the_listed_movies_or_a_data_error(table, raw_root, fuzz_files):
    with fuzz_files.private_copy(raw_root) as root:
        good = movie_ids(root)
        path = root / SPLIT_FILE
        if isinstance(table, dict):
            table = {split: real_ids(ids, good) for split, ids in table.items()}
        if isinstance(table, bytes):
            path.write_bytes(table)
        else:
            path.write_text(json_text(table), "utf-8")

        samples, error = read_everything(root)
        if error is None:
            assert isinstance(table, dict)
            listed = [movie for split in SPLITS for movie in table[split]]
            assert [s["id"] for s in samples] == listed
            assert set(listed) <= set(good) and len(set(listed)) == len(listed)
            for sample in samples:
                assert_well_typed(sample)
        else:
            assert_names_file(str(error), root)
        check_agrees(root, error)


#: mode -> (numpy dtype of its buffer, channels, formats that can store it)
MODES = {
    "L": ("u1", 1, ("PNG", "TIFF", "JPEG")),
    "RGB": ("u1", 3, ("PNG", "TIFF", "JPEG")),
    "RGBA": ("u1", 4, ("PNG", "TIFF")),
    "CMYK": ("u1", 4, ("TIFF", "JPEG")),
    "LA": ("u1", 2, ("PNG", "TIFF")),
    "P": ("u1", 1, ("PNG", "TIFF")),
    "I;16": ("<u2", 1, ("PNG", "TIFF")),
    "I": ("<i4", 1, ("TIFF",)),
    "F": ("<f4", 1, ("TIFF",)),
}


@example(mode="RGB", size=(1, 1), fill="max", image_format="BOMB", damage=None, offset=0.0)
@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(sorted(MODES)),
    size=st.sampled_from([(256, 160), (1, 1), (300, 2), (2, 300)]),
    fill=st.sampled_from(["zeros", "max", "min", "random", "nan"]),
    image_format=st.sampled_from(["PNG", "TIFF", "JPEG", "BOMB"]),
    damage=st.sampled_from([None, None, "truncate", "flip"]),
    offset=st.floats(0.0, 1.0),
)
def test_poster_gives_a_finite_image_or_a_data_error(
    mode, size, fill, image_format, damage, offset, raw_root, fuzz_files
):
    dtype, channels, formats = MODES[mode]
    info = np.finfo(dtype) if dtype.endswith("f4") else np.iinfo(dtype)
    shape = (*size, channels)
    if fill == "random":
        array = np.random.default_rng(0).uniform(-1e6, 1e6, shape).clip(info.min, info.max)
    elif fill == "nan" and mode == "F":
        array = np.full(shape, np.nan)
    else:
        array = np.full(shape, {"zeros": 0, "max": info.max}.get(fill, info.min))
    image = Image.frombytes(mode, size[::-1], array.astype(dtype).tobytes())
    if mode == "P":
        image.putpalette(list(range(256)) * 3)
    with fuzz_files.private_copy(raw_root) as root:
        movie = movie_ids(root)[2]
        path = root / "dataset" / f"{movie}.jpeg"
        if image_format == "BOMB":
            path.write_bytes(fuzz_files.bomb_png(40_000, 40_000))
        else:
            image.save(path, format=image_format if image_format in formats else "TIFF")
        if damage is not None:
            data = bytearray(path.read_bytes())
            cut = int(offset * (len(data) - 1))
            if damage == "truncate":
                del data[cut:]
            else:
                for step in range(4):
                    data[(cut + 7919 * step) % len(data)] ^= 0x5A
            path.write_bytes(bytes(data))

        samples, error = read_everything(root)
        if error is None:
            assert len(samples) == 4
            for sample in samples:
                assert_well_typed(sample)
        else:
            assert_names_file(str(error), root, path)
        check_agrees(root, error, path if error is not None else None)
