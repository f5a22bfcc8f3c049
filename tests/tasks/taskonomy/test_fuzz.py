"""Fuzzing the Taskonomy reader and `data check` with random corruptions.

Property: reading every sample of both splits either gives well-typed samples (with the values
the files hold, decoded by the formulas of docs/data.md) or raises a one-line DataError that names the
broken file under the data root; ``check_taskonomy`` never raises and agrees with the reader (ok
exactly when every sample reads).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mango.errors import DataError
from mango.tasks.taskonomy.check import check_taskonomy
from mango.tasks.taskonomy.data import TaskonomyPairs
from mango.testing.taskonomy import write_taskonomy_fixture

#: two 8-bit domains (colour, grey) and two 16-bit ones (log depth, linear edges); target last
DOMAINS = ("rgb", "reshading", "depth_zbuffer", "edge_texture")
SIZE = 12
#: stored value -> decoded value in [0, 1], as docs/data.md states (independent of the reader)
DECODE = {
    "rgb": lambda raw: raw / 255.0,
    "reshading": lambda raw: raw / 255.0,
    "depth_zbuffer": lambda raw: np.clip(np.log1p(raw) / 11.1, 0.0, 1.0),
    "edge_texture": lambda raw: np.clip(raw / 11355.0, 0.0, 1.0),
}
EIGHT_BIT = {"L", "LA", "P", "RGB", "RGBA", "RGBX"}
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
#: mode -> (numpy dtype of its buffer, channels, formats that can store it)
MODES = {
    "L": ("u1", 1, ("PNG", "JPEG")),
    "LA": ("u1", 2, ("PNG",)),
    "P": ("u1", 1, ("PNG",)),
    "RGB": ("u1", 3, ("PNG", "JPEG")),
    "RGBA": ("u1", 4, ("PNG", "TIFF")),
    "CMYK": ("u1", 4, ("TIFF",)),
    "1": ("u1", 1, ("PNG",)),
    "I;16": ("<u2", 1, ("PNG", "TIFF")),
    "I;16B": (">u2", 1, ("TIFF",)),
    "I": ("<i4", 1, ("TIFF",)),
    "F": ("<f4", 1, ("TIFF",)),
}


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 domains, 3 train and 2 val samples of 12 x 12 pixels; do not modify."""
    root = tmp_path_factory.mktemp("taskonomy_fuzz")
    return write_taskonomy_fixture(root, DOMAINS, n_train=3, n_val=2, size=SIZE)


@st.composite
def images(draw: st.DrawFn) -> tuple[Image.Image, str]:
    """A random image (mode, size, extreme or random values) and a format that can store it."""
    mode = draw(st.sampled_from(sorted(MODES)))
    dtype, channels, formats = MODES[mode]
    height, width = draw(st.sampled_from([(SIZE, SIZE), (SIZE, SIZE), (1, 1), (SIZE, SIZE + 1)]))
    info = np.finfo(dtype) if dtype.endswith("f4") else np.iinfo(dtype)
    fill = draw(st.sampled_from(["zeros", "max", "min", "random", "nan", "16-bit"]))
    shape = (height, width, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if fill == "random":
        low, high = max(info.min, -(2**40)), min(info.max, 2**40)
        array = rng.uniform(low, high, shape) if mode == "F" else rng.integers(low, high, shape)
    elif fill == "16-bit":  # values a 16-bit domain may hold (and some an 8-bit one may not)
        array = rng.integers(0, 65536, shape) % min(int(info.max) + 1, 65536)
    elif fill == "nan" and mode == "F":
        array = np.full(shape, np.nan)
    else:
        array = np.full(shape, {"zeros": 0, "max": info.max}.get(fill, info.min))
    if mode == "1":
        image = Image.fromarray(array[..., 0].astype(bool))
    else:
        image = Image.frombytes(mode, (width, height), array.astype(dtype).tobytes())
        if mode == "P":
            image.putpalette(list(range(256)) * 3)
    return image, draw(st.sampled_from(formats))


def file_of(root: Path, domain: str, split: str, index: int) -> Path:
    lines = (root / f"{split}_domain.txt").read_text().splitlines()
    return root / lines[index % len(lines)].replace("{domain}", domain)


def read_everything(root: Path) -> tuple[list[dict], DataError | None]:
    """Every sample of both splits, or the first DataError (anything else propagates)."""
    samples: list[dict] = []
    try:
        for split in ("train", "val"):
            data = TaskonomyPairs(root, list(DOMAINS[:-1]), DOMAINS[-1], split)
            samples.extend(data[index] for index in range(len(data)))
    except DataError as error:
        return samples, error
    return samples, None


def assert_well_typed(sample: dict) -> None:
    assert isinstance(sample["name"], str) and sample["name"]
    for key in (*DOMAINS[:-1], "target"):
        value = sample[key]
        assert value.dtype == torch.float32 and value.shape == (3, SIZE, SIZE), value.shape
        assert bool(((value >= -1) & (value <= 1)).all())


def assert_names_file(message: str, root: Path, named: Path | None = None) -> None:
    """One line, a file under the data root first, and ``named`` somewhere in it."""
    assert message and "\n" not in message, message
    assert message.startswith(str(root)), message
    assert named is None or str(named) in message, (named, message)


def check_agrees(root: Path, error: DataError | None, named: Path | None) -> None:
    report = check_taskonomy(root, workers=2)
    for line in report.errors:
        assert_names_file(line, root)
    assert report.ok == (error is None), (error, report.errors)
    if named is not None:
        assert any(str(named) in line for line in report.errors), report.errors


def expected_values(domain: str, path: Path) -> np.ndarray | None:
    """The decoded (3, H, W) values in [0, 1] of a replaced file, None when it must be refused.

    PIL decodes the file; which modes, sizes and value ranges a domain accepts is decided here,
    independently of the reader.
    """
    with Image.open(path) as image:
        accepted = SIXTEEN_BIT if domain in ("depth_zbuffer", "edge_texture") else EIGHT_BIT
        if image.mode not in accepted or image.size != (SIZE, SIZE):
            return None
        if image.mode in ("P", "RGBA", "RGBX"):
            image = image.convert("RGB")
        elif image.mode == "LA":
            image = image.convert("L")
        raw = np.asarray(image).astype(np.float64)
    if raw.min() < 0 or raw.max() > 65535:
        return None
    raw = raw if raw.ndim == 3 else np.repeat(raw[..., None], 3, axis=2)
    return DECODE[domain](raw).transpose(2, 0, 1)


@settings(max_examples=40, deadline=None)
@given(
    domain=st.sampled_from(DOMAINS),
    split=st.sampled_from(["train", "val"]),
    index=st.integers(0, 2),
    replacement=images(),
)
def test_replaced_image_gives_decoded_values_or_a_data_error(
    domain, split, index, replacement, clean_root, fuzz_files
):
    with fuzz_files.private_copy(clean_root) as root:
        target = file_of(root, domain, split, index)
        image, image_format = replacement
        image.save(target, format=image_format)
        expected = expected_values(domain, target)

        samples, error = read_everything(root)
        if expected is None:
            assert error is not None, f"{image.mode} {image.size} {image_format} accepted"
            assert_names_file(str(error), root, target)
        else:
            assert error is None, str(error)
            for sample in samples:
                assert_well_typed(sample)
            (sample,) = [s for s in samples if target.name.startswith(s["name"] + "_domain")]
            got = sample["target" if domain == DOMAINS[-1] else domain].numpy()
            np.testing.assert_allclose((got + 1) / 2, expected, atol=1e-6)
        check_agrees(root, error, target if error is not None else None)


@settings(max_examples=35, deadline=None)
@given(
    domain=st.sampled_from(DOMAINS),
    index=st.integers(0, 2),
    damage=st.sampled_from(["truncate", "random", "flip", "missing", "folder", "empty", "bomb"]),
    offset=st.floats(0.0, 1.0),
    noise=st.binary(min_size=1, max_size=64),
)
def test_damaged_file_gives_a_data_error_naming_it(
    domain, index, damage, offset, noise, clean_root, fuzz_files
):
    with fuzz_files.private_copy(clean_root) as root:
        clean, clean_error = read_everything(root)
        assert clean_error is None
        target = file_of(root, domain, "train", index)
        fuzz_files.damage(target, damage, offset, noise)

        samples, error = read_everything(root)
        if error is None:
            assert damage in ("flip", "truncate"), damage
            for sample in samples:
                assert_well_typed(sample)
            if damage == "truncate":  # a truncated file cannot hold other pixels
                for got, want in zip(samples, clean, strict=True):
                    for key in (*DOMAINS[:-1], "target"):
                        assert torch.equal(got[key], want[key])
        else:
            assert_names_file(str(error), root, target)
        check_agrees(root, error, target if error is not None else None)


#: list lines: templates that escape the root, name no file, or are junk
BAD_LINES = (
    "{domain}/point_9_view_0_domain_{domain}.png",  # a sample that does not exist
    "{domain}/" + "a" * 300 + ".png",  # a name too long for the file system
    "{domain}/a\x00b.png",
    "{domain}",
    "{domain}/",
    "{domain}/../{domain}/point_0_view_0_domain_{domain}.png",
    "/tmp/{domain}/point_0_view_0_domain_{domain}.png",
    "//{domain}/x.png",
    "rgb/point_0_view_0_domain_rgb.png",  # a concrete path: turned into a template
    "nothing/x.png",
    "x",
    "\u2028",
    "\ufeff{domain}/x.png",
    "{domain}\\point_0_view_0_domain_{domain}.png",
)


@example(lines=[(0, BAD_LINES[1])], ending="\n", raw=None)  # name too long for the OS
@example(lines=[(0, BAD_LINES[6])], ending="\n", raw=None)  # absolute path outside the root
@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.integers(0, 2), st.one_of(st.none(), st.sampled_from(BAD_LINES), st.text())),
        max_size=4,
    ),
    ending=st.sampled_from(["\n", "\r\n", ""]),
    raw=st.sampled_from([None, None, None, b"\xff\xfe\x00", b"{domain}/\x80.png"]),
)
def test_random_list_file_gives_samples_or_a_data_error(lines, ending, raw, clean_root, fuzz_files):
    with fuzz_files.private_copy(clean_root) as root:
        list_path = root / "train_domain.txt"
        good = list_path.read_text().splitlines()
        if raw is None:
            text = ending.join(good[i] if line is None else line for i, line in lines)
            list_path.write_text(text + ending, encoding="utf-8")
        else:
            list_path.write_bytes(raw)

        samples, error = read_everything(root)
        if error is None:
            for sample in samples:
                assert_well_typed(sample)
            data = TaskonomyPairs(root, list(DOMAINS[:-1]), DOMAINS[-1], "train")
            for index in range(len(data)):
                for path in data.paths(index).values():
                    assert path.resolve().is_relative_to(root.resolve()), path
        else:
            assert_names_file(str(error), root)
        check_agrees(root, error, None)


def test_depth_in_a_32_bit_container_is_range_checked(clean_root: Path, fuzz_files) -> None:
    """A 16-bit domain stored as 32-bit integers: 0..65535 is read, other values are refused."""
    with fuzz_files.private_copy(clean_root) as root:
        target = file_of(root, "depth_zbuffer", "val", 0)
        values = np.arange(SIZE * SIZE, dtype=np.int32).reshape(SIZE, SIZE) * 455
        Image.frombytes("I", (SIZE, SIZE), values.tobytes()).save(target, format="TIFF")
        samples, error = read_everything(root)
        assert error is None and check_taskonomy(root, workers=2).ok
        depth = (samples[3]["depth_zbuffer"][0].numpy() + 1) / 2
        assert depth[0, 1] == pytest.approx(math.log1p(455) / 11.1, abs=1e-6)
        assert depth[11, 11] == pytest.approx(math.log1p(143 * 455) / 11.1, abs=1e-6)

        values[4, 4] = -1
        Image.frombytes("I", (SIZE, SIZE), values.tobytes()).save(target, format="TIFF")
        message = f"{target}: depth_zbuffer values outside the 16-bit range 0..65535"
        with pytest.raises(DataError) as caught:
            TaskonomyPairs(root, list(DOMAINS[:-1]), DOMAINS[-1], "val")[0]
        assert str(caught.value) == message
        assert check_taskonomy(root, workers=2).errors == [message]
