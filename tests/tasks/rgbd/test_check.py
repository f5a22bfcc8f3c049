"""check_segmentation on clean fixtures: counts, warnings, options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mango.tasks.check import CheckReport
from mango.tasks.rgbd.check import check_segmentation


@pytest.mark.parametrize(
    ("layout", "counts", "published"),
    [
        ("nyudv2", {"train": 4, "val": 3}, {"train": 795, "val": 654}),
        ("sunrgbd", {"train": 4, "test": 3}, {"train": 5285, "test": 5050}),
    ],
)
def test_clean_fixture(
    layout: str, counts: dict, published: dict, nyu_root: Path, sun_root: Path
) -> None:
    root = {"nyudv2": nyu_root, "sunrgbd": sun_root}[layout]
    report = check_segmentation(layout, root, progress=False)
    assert isinstance(report, CheckReport)
    assert report.ok and report.errors == []
    assert report.layout == layout and report.root == root
    assert report.counts == counts
    # fixture sizes differ from the published split sizes: warnings, not errors
    assert report.warnings == [
        f"{root / f'{split}.txt'}: {n} samples, the published {split} split has {published[split]}"
        for split, n in counts.items()
    ]
    assert f"{layout} at {root}" in report.summary()


def test_wrong_layout_is_caught(nyu_root: Path) -> None:
    report = check_segmentation("sunrgbd", nyu_root, progress=False)
    assert not report.ok
    # NYU's train.txt names rgb/... where SUN expects RGB/...; SUN's test.txt does not exist
    assert sum("is not under RGB/" in e for e in report.errors) == 4
    assert any(e.endswith("test.txt: list file does not exist") for e in report.errors)


def test_missing_root(tmp_path: Path) -> None:
    report = check_segmentation("nyudv2", tmp_path / "absent", progress=False)
    assert report.errors == [f"{tmp_path / 'absent'}: data folder does not exist"]


def test_decode_false_reads_headers_but_still_checks_labels(fresh_copy: Callable) -> None:
    root = fresh_copy("nyudv2")
    rgb, mask, _ = ((root / p) for p in (root / "val.txt").read_text().split("\n")[0].split("\t"))
    data = rgb.read_bytes()
    rgb.write_bytes(data[: len(data) - len(data) // 3])  # header intact, pixel data cut
    assert check_segmentation("nyudv2", root, progress=False, decode=False).ok
    full = check_segmentation("nyudv2", root, progress=False)
    assert len(full.errors) == 1 and full.errors[0].startswith(f"{rgb}: ")

    mask.write_bytes(b"")
    header_only = check_segmentation("nyudv2", root, progress=False, decode=False)
    assert [e.split(": ")[0] for e in header_only.errors] == [str(mask)]
