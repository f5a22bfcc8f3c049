"""MM-IMDb readers: both release formats, pixel/label/text decoding and every bad-input error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mango.errors import ConfigError, DataError
from mango.models.encoders.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from mango.tasks.mmimdb.data import MMIMDbDataset
from mango.tasks.mmimdb.genres import EXTRA_RAW_GENRES, GENRES, SPLIT_SIZES
from mango.tasks.mmimdb.readers import genre_vector
from mango.tasks.mmimdb.transforms import decode_caffe_image
from mango.testing.mmimdb import (
    POSTER_SIZE,
    fixture_movies,
)

SIZES = {"train": 6, "dev": 3, "test": 4}


def _open(root: Path, split: str = "train", size: int = 16) -> MMIMDbDataset:
    return MMIMDbDataset(root, split, image_size=size, strict_sizes=False)


def _unnormalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return image * std + mean


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError], *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- semantics ---------------------------------------------------------------------------------


def test_genre_constants() -> None:
    assert len(GENRES) == 23 and len(set(GENRES)) == 23
    assert GENRES[:4] == ("Drama", "Comedy", "Romance", "Thriller") and GENRES[-1] == "Film-Noir"
    assert not set(EXTRA_RAW_GENRES) & set(GENRES) and len(EXTRA_RAW_GENRES) == 4
    assert SPLIT_SIZES == {"train": 15552, "dev": 2608, "test": 7799}


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_both_formats_read_to_the_same_samples(hdf5_root: Path, raw_root: Path, split: str) -> None:
    hdf5, raw = _open(hdf5_root, split), _open(raw_root, split)
    assert (hdf5.format, raw.format) == ("hdf5", "raw")
    assert len(hdf5) == len(raw) == SIZES[split]
    assert hdf5.ids == raw.ids
    np.testing.assert_array_equal(hdf5.label_matrix(), raw.label_matrix())
    for a, b in zip(hdf5, raw, strict=True):
        assert set(a) == {"image", "text", "labels", "id"}
        assert a["id"] == b["id"] and a["text"] == b["text"]
        assert a["image"].dtype == b["image"].dtype == torch.float32
        assert a["image"].shape == b["image"].shape == (3, 16, 16)
        assert a["labels"].dtype == torch.float32 and a["labels"].shape == (23,)
        assert torch.equal(a["labels"], b["labels"])
        # jpeg compression + the int32 truncation of the release: a few grey levels at most
        assert (_unnormalise(a["image"]) - _unnormalise(b["image"])).abs().max() < 4 / 255


def test_labels_and_ids_match_the_generated_movies(hdf5_root: Path) -> None:
    movies = fixture_movies()[6:9]
    data = _open(hdf5_root, "val")  # "val" is accepted for dev
    assert data.split == "dev" and data.ids == [m.imdb_id for m in movies]
    for movie, item in zip(movies, data, strict=True):
        expected = [g for g in GENRES if g in movie.genres]
        assert [GENRES[i] for i in item["labels"].nonzero().flatten()] == expected
        assert item["text"] == movie.longest_plot


def test_longest_plot_is_chosen(raw_root: Path) -> None:
    data = _open(raw_root, "train")
    reordered = 0
    for index, movie in enumerate(data.ids):
        plots = json.loads((raw_root / "dataset" / f"{movie}.json").read_text())["plot"]
        longest = max(plots, key=len)
        assert data[index]["text"] == longest
        assert all(len(p) < len(longest) for p in plots if p is not longest)
        reordered += plots.index(longest) > 0
    assert reordered >= 1  # the fixture does not always put the longest plot first


def test_only_the_23_standard_genres_are_kept(raw_copy: Path) -> None:
    movie = json.loads((raw_copy / "split.json").read_text())["train"][0]
    path = raw_copy / "dataset" / f"{movie}.json"
    record = json.loads(path.read_text())
    record["genres"] = ["Talk-Show", "Western", "Adult", "News", "Drama", "Reality-TV"]
    path.write_text(json.dumps(record))
    labels = _open(raw_copy)[0]["labels"]
    assert labels.sum() == 2
    assert labels[GENRES.index("Western")] == 1 and labels[GENRES.index("Drama")] == 1
    everything = genre_vector(list(GENRES) + list(EXTRA_RAW_GENRES))
    assert everything.shape == (23,) and everything.sum() == 23


def test_extra_genres_appear_in_the_raw_fixture(raw_root: Path) -> None:
    raw = [json.loads(p.read_text())["genres"] for p in (raw_root / "dataset").glob("*.json")]
    assert any(set(g) & set(EXTRA_RAW_GENRES) for g in raw)
    assert any(
        len(json.loads(p.read_text())["plot"]) > 1 for p in (raw_root / "dataset").glob("*.json")
    )


def test_caffe_bgr_pixel_becomes_rgb() -> None:
    # B=10, G=20, R=200 stored as (value - Caffe mean), truncated to int32 like the release
    stored = np.array([10 - 103.939, 20 - 116.779, 200 - 123.68]).astype(np.int32).reshape(3, 1, 1)
    assert stored.flatten().tolist() == [-93, -96, 76]
    rgb = decode_caffe_image(stored).flatten()
    np.testing.assert_allclose(rgb.numpy(), [199.68 / 255, 20.779 / 255, 10.939 / 255], rtol=1e-6)
    clipped = decode_caffe_image(np.full((3, 1, 1), 200, dtype=np.int32))
    assert clipped.max() == 1.0


def test_hdf5_pixels_are_decoded_to_rgb(hdf5_root: Path) -> None:
    movie = fixture_movies()[0]
    with h5py.File(hdf5_root / "multimodal_imdb.hdf5", "r") as f:
        images = f["images"]
        assert images.dtype == np.int32 and images.shape == (13, 3, *POSTER_SIZE)
        red, green, blue = (int(v) for v in movie.poster[0, 0])
        assert images[0, :, 0, 0].tolist() == [
            int(blue - 103.939),
            int(green - 116.779),
            int(red - 123.68),
        ]
    item = _open(hdf5_root, size=8)[0]
    top_left = _unnormalise(item["image"])[:, 0, 0]  # top half of the poster is one colour
    np.testing.assert_allclose(top_left.numpy(), movie.poster[0, 0] / 255.0, atol=1.01 / 255)


def test_hdf5_columns_follow_target_names(hdf5_copy: Path, replace_dataset) -> None:
    expected = _open(hdf5_copy).label_matrix().copy()
    order = np.random.default_rng(0).permutation(23)
    replace_dataset(hdf5_copy, "genres", lambda v: v[:, order])
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        f["genres"].attrs["target_names"] = json.dumps([GENRES[i] for i in order])
    np.testing.assert_array_equal(_open(hdf5_copy).label_matrix(), expected)


def test_split_rows_without_fuel_table_use_the_published_ranges(hdf5_copy: Path) -> None:
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        del f.attrs["split"]
    # 13 rows all fall inside [0, 15552): all train
    assert len(_open(hdf5_copy, "train")) == 13
    assert len(_open(hdf5_copy, "test")) == 0


def test_dataset_pickles_for_dataloader_workers(hdf5_root: Path) -> None:
    data = _open(hdf5_root)
    first = data[0]
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[0]["image"], first["image"])
    data.close()
    assert data[1]["id"] == clone[1]["id"]


# --- split sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["hdf5", "raw"])
def test_split_size_is_checked_unless_disabled(hdf5_root: Path, raw_root: Path, fmt: str) -> None:
    root = hdf5_root if fmt == "hdf5" else raw_root
    source = "multimodal_imdb.hdf5" if fmt == "hdf5" else "split.json"
    with pytest.raises(DataError) as excinfo:
        MMIMDbDataset(root, "train")
    message = _one_line_error(excinfo, source)
    assert message.endswith(
        "split 'train' has 6 movies, expected 15552 "
        "(pass strict_sizes=False / --set data.strict_sizes=false for subsets)"
    )
    assert len(MMIMDbDataset(root, "test", strict_sizes=False)) == 4


def test_unknown_split_is_a_config_error(raw_root: Path) -> None:
    with pytest.raises(ConfigError, match="split: MM-IMDb has no split 'validate'"):
        MMIMDbDataset(raw_root, "validate")


def test_strict_sizes_pass_for_the_published_counts(tmp_path: Path) -> None:
    """A release-sized HDF5 (tiny 2x2 images, no Fuel table): the published row ranges apply."""
    n = sum(SPLIT_SIZES.values())
    with h5py.File(tmp_path / "multimodal_imdb.hdf5", "w") as f:
        f.create_dataset("images", data=np.zeros((n, 3, 2, 2), np.int32))
        sequences = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.int32))
        sequences[...] = [np.array([1, 2], np.int32)] * n
        genres = np.zeros((n, 23), np.int32)
        genres[np.arange(n), np.arange(n) % 23] = 1
        f.create_dataset("genres", data=genres)
        f.create_dataset("imdb_ids", data=np.array([f"{i:07d}" for i in range(n)], dtype="S7"))
    np.save(tmp_path / "metadata.npy", {"ix_to_word": {0: "_UNK_", 1: "a", 2: "b"}})
    for split, size in SPLIT_SIZES.items():
        data = MMIMDbDataset(tmp_path, split, image_size=4)
        assert len(data) == size
    assert data.ids[0] == "0018160"  # test rows start at 15552 + 2608
    item = data[0]
    assert item["text"] == "a b" and item["labels"].argmax() == 18160 % 23


def test_duplicate_ids_in_split_file(raw_copy: Path) -> None:
    split = json.loads((raw_copy / "split.json").read_text())
    split["test"].append(split["train"][0])
    (raw_copy / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError) as excinfo:
        _open(raw_copy)
    _one_line_error(excinfo, "split.json", f"imdb id '{split['train'][0]}' appears twice")


# --- bad input ---------------------------------------------------------------------------------


def test_missing_folder_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        MMIMDbDataset(tmp_path / "nope", "train")
    _one_line_error(excinfo, "nope", "does not exist")
    with pytest.raises(DataError) as excinfo:
        MMIMDbDataset(tmp_path, "train")
    _one_line_error(excinfo, str(tmp_path), "multimodal_imdb.hdf5", "split.json")


def test_hdf5_missing_metadata(hdf5_copy: Path) -> None:
    (hdf5_copy / "metadata.npy").unlink()
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "metadata.npy", "not found")


def test_hdf5_metadata_without_vocabulary(hdf5_copy: Path) -> None:
    np.save(hdf5_copy / "metadata.npy", {"word_to_ix": {"a": 0}}, allow_pickle=True)
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "metadata.npy", "ix_to_word")


def test_hdf5_not_an_hdf5_file(hdf5_copy: Path) -> None:
    (hdf5_copy / "multimodal_imdb.hdf5").write_bytes(b"garbage")
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "multimodal_imdb.hdf5", "cannot be opened as HDF5")


@pytest.mark.parametrize("key", ["images", "sequences", "genres", "imdb_ids"])
def test_hdf5_missing_key(hdf5_copy: Path, replace_dataset, key: str) -> None:
    replace_dataset(hdf5_copy, key, None)
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "multimodal_imdb.hdf5", f"missing dataset key '{key}'")


@pytest.mark.parametrize(
    ("key", "make", "fragment"),
    [
        ("images", lambda v: v.astype(np.float32), "key 'images' has dtype float32"),
        ("images", lambda v: v[:, :2], "key 'images' has shape (13, 2, 256, 160)"),
        ("genres", lambda v: v.astype(np.float64), "key 'genres' has dtype float64"),
        ("genres", lambda v: v[:, :20], "key 'genres' has shape (13, 20)"),
        ("genres", lambda v: v * 2, "key 'genres' row 0 holds 2"),
        ("imdb_ids", lambda v: np.arange(len(v)), "key 'imdb_ids' has dtype int64"),
        ("imdb_ids", lambda v: v[:5], "key 'imdb_ids' has shape (5,)"),
        ("sequences", lambda v: np.zeros((len(v), 3), np.int32), "key 'sequences' has dtype"),
    ],
)
def test_hdf5_wrong_dtype_or_shape(hdf5_copy: Path, replace_dataset, key, make, fragment) -> None:
    replace_dataset(hdf5_copy, key, make)
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "multimodal_imdb.hdf5", fragment)


def test_hdf5_target_names_must_be_the_23_genres(hdf5_copy: Path) -> None:
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        f["genres"].attrs["target_names"] = json.dumps(list(GENRES[:22]) + ["Talk-Show"])
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "target_names", "Film-Noir", "Talk-Show")


def test_hdf5_bad_split_table(hdf5_copy: Path) -> None:
    with h5py.File(hdf5_copy / "multimodal_imdb.hdf5", "r+") as f:
        table = f.attrs["split"]
        table["stop"][table["split"] == b"test"] = 99
        f.attrs["split"] = table
    with pytest.raises(DataError) as excinfo:
        _open(hdf5_copy)
    _one_line_error(excinfo, "split 'test' rows [9, 99) outside the 13 rows")


def _set_sequence(root: Path, row: int, ids: list[int]) -> None:
    with h5py.File(root / "multimodal_imdb.hdf5", "r+") as f:
        f["sequences"][row] = np.array(ids, dtype=np.int32)


def test_hdf5_empty_plot_and_unknown_word(hdf5_copy: Path) -> None:
    _set_sequence(hdf5_copy, 1, [])
    _set_sequence(hdf5_copy, 2, [1, 99999])
    data = _open(hdf5_copy)
    assert data[0]["text"]
    with pytest.raises(DataError) as excinfo:
        data[1]
    _one_line_error(excinfo, "multimodal_imdb.hdf5 row 1 (imdb id 0000002)", "empty plot")
    with pytest.raises(DataError) as excinfo:
        data[2]
    _one_line_error(excinfo, "row 2", "word id 99999 is not in metadata.npy")


def _first_movie(root: Path) -> tuple[Path, Path]:
    movie = json.loads((root / "split.json").read_text())["train"][0]
    return root / "dataset" / f"{movie}.json", root / "dataset" / f"{movie}.jpeg"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"dev": [], "test": []}', "key 'train' must be a list of imdb id strings"),
        ('{"train": [1], "dev": [], "test": []}', "key 'train' must be a list"),
    ],
)
def test_raw_malformed_split_file(raw_copy: Path, content: str, fragment: str) -> None:
    (raw_copy / "split.json").write_text(content)
    with pytest.raises(DataError) as excinfo:
        _open(raw_copy)
    _one_line_error(excinfo, "split.json", fragment)


def test_raw_missing_split_file(raw_copy: Path) -> None:
    (raw_copy / "split.json").unlink()
    with pytest.raises(DataError) as excinfo:
        _open(raw_copy)
    _one_line_error(excinfo, "split.json", "file not found")


@pytest.mark.parametrize("suffix", [".json", ".jpeg"])
def test_raw_missing_movie_files(raw_copy: Path, suffix: str) -> None:
    json_path, jpeg_path = _first_movie(raw_copy)
    path = json_path if suffix == ".json" else jpeg_path
    path.unlink()
    with pytest.raises(DataError) as excinfo:
        _open(raw_copy)
    _one_line_error(excinfo, str(path), "not found")


def test_raw_unreadable_poster(raw_copy: Path) -> None:
    _, jpeg_path = _first_movie(raw_copy)
    jpeg_path.write_bytes(b"\xff\xd8 truncated")
    data = _open(raw_copy)
    assert data[1]["image"].shape == (3, 16, 16)
    with pytest.raises(DataError) as excinfo:
        data[0]
    _one_line_error(excinfo, str(jpeg_path), "cannot be decoded as an image")


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ("{broken", "not valid JSON"),
        ('{"plot": [], "genres": ["Drama"]}', "empty plot"),
        ('{"plot": ["", "  "], "genres": ["Drama"]}', "empty plot"),
        ('{"plot": "one string", "genres": ["Drama"]}', "key 'plot' must be a list of strings"),
        ('{"plot": ["a story"]}', "key 'genres' must be a list of strings"),
    ],
)
def test_raw_bad_movie_json(raw_copy: Path, record: str, fragment: str) -> None:
    json_path, _ = _first_movie(raw_copy)
    json_path.write_text(record)
    data = _open(raw_copy)
    with pytest.raises(DataError) as excinfo:
        data[0]
    _one_line_error(excinfo, str(json_path), fragment)
