"""Fuzzing the NYUDv2 / SUN RGB-D readers and `data check` with random corruptions.

Property: reading every sample of every split either gives well-typed samples (and the exact
values the files hold) or raises a one-line DataError that names the broken file under the data
root; ``check_segmentation`` never raises and agrees with the reader (ok exactly when every
sample reads).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mango.errors import DataError
from mango.tasks.rgbd.check import check_segmentation
from mango.tasks.rgbd.data import RGBDSegmentationDataset
from mango.tasks.rgbd.layouts import IGNORE_INDEX, SegmentationLayout, get_layout

LAYOUTS = ("nyudv2", "sunrgbd")
COLUMNS = ("rgb", "mask", "depth")
#: modes each column accepts after decoding (anything else must be a DataError)
ACCEPTED = {
    "rgb": {"RGB", "RGBA", "RGBX", "L", "P", "CMYK", "YCbCr"},
    "mask": {"L", "P"},
    "depth": {"I;16", "I;16L", "I;16B", "I;16N"},
}
#: formats that can store each mode
FORMATS = {
    "L": ("PNG", "TIFF", "JPEG"),
    "RGB": ("PNG", "TIFF", "JPEG"),
    "CMYK": ("TIFF", "JPEG"),
    "RGBA": ("PNG", "TIFF"),
    "LA": ("PNG", "TIFF"),
    "P": ("PNG", "TIFF"),
    "1": ("PNG", "TIFF"),
    "I;16": ("PNG", "TIFF"),
    "I;16B": ("TIFF",),
    "I": ("TIFF",),
    "F": ("TIFF",),
}
#: numpy dtype and channel count of the raw buffer of each mode
BUFFERS = {
    "L": ("u1", 1),
    "RGB": ("u1", 3),
    "CMYK": ("u1", 4),
    "RGBA": ("u1", 4),
    "LA": ("u1", 2),
    "P": ("u1", 1),
    "1": ("u1", 1),
    "I;16": ("<u2", 1),
    "I;16B": (">u2", 1),
    "I": ("<i4", 1),
    "F": ("<f4", 1),
}
FIXTURE_SIZE = (48, 64)  # (height, width) of the conftest fixtures


def fixture_root(layout: str, nyu_root: Path, sun_root: Path) -> Path:
    return {"nyudv2": nyu_root, "sunrgbd": sun_root}[layout]


@st.composite
def images(draw: st.DrawFn) -> tuple[Image.Image, str]:
    """A random image (mode, size, extreme or random values) and a format that can store it."""
    mode = draw(st.sampled_from(sorted(BUFFERS)))
    size = draw(st.sampled_from([FIXTURE_SIZE, FIXTURE_SIZE, (1, 1), (3, 5), (48, 63)]))
    dtype, channels = BUFFERS[mode]
    info = np.finfo(dtype) if dtype.endswith("f4") else np.iinfo(dtype)
    fill = draw(st.sampled_from(["zeros", "max", "min", "random", "labels", "nan", "inf"]))
    shape = (*size, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if fill == "random":
        array = rng.uniform(info.min / 2, info.max / 2, shape) if mode == "F" else None
        array = rng.integers(info.min, info.max, shape, endpoint=True) if array is None else array
    elif fill == "labels":  # small values: valid (or nearly valid) class ids
        array = rng.integers(0, 42, shape)
    elif fill in ("nan", "inf") and mode == "F":
        array = np.full(shape, np.nan if fill == "nan" else -np.inf)
    else:
        array = np.full(shape, {"zeros": 0, "max": info.max}.get(fill, info.min))
    if mode == "1":
        image = Image.fromarray(array[..., 0].astype(bool))
    else:
        data = array.astype(dtype)
        image = Image.frombytes(mode, (size[1], size[0]), data.tobytes())
        if mode == "P":
            image.putpalette(list(range(256)) * 3)
    return image, draw(st.sampled_from(FORMATS[mode]))


def _first_line(root: Path, layout: SegmentationLayout, split: str, index: int) -> list[str]:
    lines = (root / layout.list_files[split]).read_text().splitlines()
    return lines[index % len(lines)].split("\t")


def read_everything(root: Path, layout: str) -> tuple[list[dict], DataError | None]:
    """Every sample of every split, or the first DataError (anything else propagates)."""
    samples: list[dict] = []
    spec = get_layout(layout)
    try:
        for split in spec.splits:
            data = RGBDSegmentationDataset(root, layout, split)
            samples.extend(data[index] for index in range(len(data)))
    except DataError as error:
        return samples, error
    return samples, None


def assert_well_typed(sample: dict, layout: SegmentationLayout) -> None:
    rgb, depth, mask = sample["rgb"], sample["depth"], sample["mask"]
    height, width = mask.shape
    assert rgb.dtype == depth.dtype == torch.float32 and mask.dtype == torch.int64
    assert rgb.shape == (3, height, width) and depth.shape == (1, height, width)
    assert bool(((rgb >= 0) & (rgb <= 1)).all()) and bool(((depth >= 0) & (depth <= 1)).all())
    assert set(mask.unique().tolist()) <= set(range(layout.num_classes)) | {IGNORE_INDEX}
    assert isinstance(sample["name"], str) and isinstance(sample["rgb_path"], str)


def assert_names_file(message: str, root: Path, named: Path | None = None) -> None:
    """One line, a file under the data root first, and ``named`` somewhere in it."""
    assert message and "\n" not in message, message
    assert message.startswith(str(root)), message
    assert named is None or str(named) in message, (named, message)


def check_agrees(root: Path, layout: str, error: DataError | None, named: Path | None) -> None:
    report = check_segmentation(layout, root, progress=False, workers=2)
    for line in report.errors:
        assert_names_file(line, root)
    assert report.ok == (error is None), (error, report.errors)
    if named is not None and error is not None:
        assert any(str(named) in line for line in report.errors), report.errors


def expected_arrays(column: str, path: Path, layout: SegmentationLayout) -> np.ndarray | None:
    """What the reader must return for a replaced file (None: it must raise DataError).

    PIL decodes the file (the oracle for pixels); the accepted modes, the size and the label
    rules are applied here independently of the reader.
    """
    with Image.open(path) as image:
        mode, size = image.mode, image.size
        if mode not in ACCEPTED[column] or size != FIXTURE_SIZE[::-1]:
            return None
        if column == "rgb":
            return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        raw = np.asarray(image)
    if column == "depth":
        return layout.depth(raw.astype(np.uint16))[None]
    labels = raw.astype(np.int64)
    if layout.label_offset:  # SUN RGB-D: 0 = void, 1..37 -> 0..36
        valid = (labels <= layout.num_classes) | (labels == IGNORE_INDEX)
        labels = np.where((labels == 0) | (labels == IGNORE_INDEX), IGNORE_INDEX, labels - 1)
    else:
        valid = (labels < layout.num_classes) | (labels == IGNORE_INDEX)
    return labels if bool(valid.all()) else None


@settings(max_examples=45, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    column=st.sampled_from(COLUMNS),
    split_index=st.integers(0, 1),
    line_index=st.integers(0, 3),
    replacement=images(),
)
def test_replaced_image_gives_exact_values_or_a_data_error(
    layout, column, split_index, line_index, replacement, nyu_root, sun_root, fuzz_files
):
    spec = get_layout(layout)
    split = spec.splits[split_index]
    with fuzz_files.private_copy(fixture_root(layout, nyu_root, sun_root)) as root:
        fields = _first_line(root, spec, split, line_index)
        target = root / fields[spec.columns.index(column)]
        image, image_format = replacement
        image.save(target, format=image_format)
        expected = expected_arrays(column, target, spec)

        samples, error = read_everything(root, layout)
        if expected is None:
            assert error is not None, f"{image.mode} {image.size} {image_format} accepted"
            assert_names_file(str(error), root, target)
        else:
            assert error is None, str(error)
            (sample,) = [s for s in samples if s["name"] == Path(fields[0]).stem]
            assert_well_typed(sample, spec)
            np.testing.assert_allclose(sample[column].numpy(), expected, atol=1e-6)
        check_agrees(root, layout, error, target if error is not None else None)


@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    column=st.sampled_from(COLUMNS),
    line_index=st.integers(0, 3),
    damage=st.sampled_from(["truncate", "random", "flip", "missing", "folder", "empty", "bomb"]),
    offset=st.floats(0.0, 1.0),
    noise=st.binary(min_size=1, max_size=64),
)
def test_damaged_file_gives_a_data_error_naming_it(
    layout, column, line_index, damage, offset, noise, nyu_root, sun_root, fuzz_files
):
    spec = get_layout(layout)
    with fuzz_files.private_copy(fixture_root(layout, nyu_root, sun_root)) as root:
        clean, clean_error = read_everything(root, layout)
        assert clean_error is None
        target = root / _first_line(root, spec, "train", line_index)[spec.columns.index(column)]
        fuzz_files.damage(target, damage, offset, noise)

        samples, error = read_everything(root, layout)
        if error is None:
            # only byte flips in ancillary chunks or pixel data may still decode
            assert damage in ("flip", "truncate"), damage
            for sample in samples:
                assert_well_typed(sample, spec)
            if damage == "truncate":  # a truncated file cannot hold other pixels
                for got, want in zip(samples, clean, strict=True):
                    for key in ("rgb", "depth", "mask"):
                        assert torch.equal(got[key], want[key])
        else:
            assert_names_file(str(error), root, target)
        check_agrees(root, layout, error, target if error is not None else None)


#: file names that exist nowhere, are too long for the OS, hold a NUL byte or odd characters
NAMES = ("000001.png", "x", "ü.png", "a" * 300 + ".png", "a\x00b.png", "", ".", "..")
#: fields that are not a path inside the root
JUNK = ("", " ", "..", "/", "/etc/passwd", "C:\\x.png", "\u2028", "\ufeff", "rgb/../../x.png")


#: how one list line is damaged: (good line index, column, damage, choice, text, separator)
LINE_DAMAGE = st.tuples(
    st.integers(0, 3),
    st.integers(0, 2),
    st.sampled_from(["none", "name", "junk", "text", "count"]),
    st.integers(0, len(NAMES) - 1),
    st.text(max_size=12),
    st.sampled_from(["\t", "\t", " ", "\t\t", ",", "\t \t"]),
)


def damaged_line(layout: SegmentationLayout, good: list[str], damage: tuple) -> str:
    """A good list line, or one with a column replaced by a bad name in the right folder, a
    path outside the root or junk text, or with a column too few or too many."""
    index, column, kind, choice, text, separator = damage
    fields = good[index % len(good)].split("\t")
    if kind == "name":
        fields[column] = f"{layout.folders[layout.columns[column]]}/{NAMES[choice]}"
    elif kind == "junk":
        fields[column] = JUNK[choice % len(JUNK)]
    elif kind == "text":
        fields[column] = text
    elif kind == "count":
        fields = fields[:column] if column < 2 else [*fields, fields[0]]
    return separator.join(fields)


# a name too long for the OS; a NUL byte in a path
@example(
    layout="nyudv2", split_index=0, damages=[(0, 0, "name", 3, "", "\t")], ending="\n", raw=None
)
@example(layout="sunrgbd", split_index=1, damages=[(1, 2, "name", 4, "", " ")], ending="", raw=None)
@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    split_index=st.integers(0, 1),
    damages=st.lists(LINE_DAMAGE, max_size=4),
    ending=st.sampled_from(["\n", "\r\n", ""]),
    raw=st.sampled_from([None, None, None, b"\xff\xfe\x00", b"rgb/\x80.png"]),
)
def test_random_list_file_gives_samples_or_a_data_error(
    layout, split_index, damages, ending, raw, nyu_root, sun_root, fuzz_files
):
    spec = get_layout(layout)
    split = spec.splits[split_index]
    with fuzz_files.private_copy(fixture_root(layout, nyu_root, sun_root)) as root:
        list_path = root / spec.list_files[split]
        good = list_path.read_text().splitlines()
        if raw is None:
            lines = [damaged_line(spec, good, damage) for damage in damages]
            list_path.write_text(ending.join(lines) + ending, encoding="utf-8")
        else:
            list_path.write_bytes(raw)

        samples, error = read_everything(root, layout)
        if error is None:
            for sample in samples:
                assert_well_typed(sample, spec)
                assert Path(sample["rgb_path"]).resolve().is_relative_to(root.resolve())
        else:
            assert_names_file(str(error), root)
        check_agrees(root, layout, error, None)
