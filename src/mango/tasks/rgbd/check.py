"""`mango data check --layout nyudv2|sunrgbd`: verify an RGB-D segmentation folder.

For every split of the layout the check reads the list file (missing, empty or malformed lines
are errors), compares the number of samples with the published count (a difference is only a
warning: subsets and fixtures are legitimate) and then validates every listed file with the
same functions the reader uses: the file exists and decodes, depth is single-channel 16-bit,
the mask single-channel 8-bit, rgb/depth/mask sizes agree and, after the layout's label shift,
every label is a class id or 255. Each bad file gives one error line ``"<file>: <problem>"``.

Files are opened in a thread pool (PIL decodes outside the GIL). Sizes and modes come from the
image headers; with ``decode=False`` rgb and depth are not decoded further (much faster, but a
truncated rgb or depth file goes unnoticed), masks are always decoded to check their labels.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from mango.tasks.check import CheckReport
from mango.tasks.rgbd.data import (
    BadFileError,
    Entry,
    check_sizes,
    mask_labels,
    open_depth,
    open_mask,
    open_rgb,
    parse_list,
)
from mango.tasks.rgbd.layouts import SegmentationLayout, get_layout

Problem = tuple[Path, str]


def check_entry(entry: Entry, layout: SegmentationLayout, decode: bool = True) -> list[Problem]:
    """The problems of one sample's files, at most one per file."""
    problems: list[Problem] = []
    opened = {}
    for key, path, opener, full in (
        ("rgb", entry.rgb, open_rgb, decode),
        ("depth", entry.depth, open_depth, decode),
        ("mask", entry.mask, open_mask, True),
    ):
        try:
            opened[key] = (path, opener(path, decode=full))
        except BadFileError as error:
            problems.append((error.path, error.problem))
    if "rgb" in opened:
        for key in ("depth", "mask"):
            if key in opened:
                try:
                    check_sizes(opened["rgb"], opened[key])
                except BadFileError as error:
                    problems.append((error.path, error.problem))
                    del opened[key]
    if "mask" in opened:
        try:
            mask_labels(entry.mask, opened["mask"][1], layout)
        except BadFileError as error:
            problems.append((error.path, error.problem))
    for _, image in opened.values():
        image.close()
    return problems


def check_segmentation(
    layout: str | SegmentationLayout,
    root: str | os.PathLike[str],
    *,
    decode: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Check the dataset folder ``root`` against ``layout`` (``"nyudv2"`` or ``"sunrgbd"``).

    ``workers`` threads open the files (default: up to 8, one per CPU); ``progress`` shows a
    tqdm bar on stderr (only when stderr is a terminal).

    Example:
        >>> import tempfile
        >>> from mango.testing.rgbd import write_nyudv2_fixture
        >>> root = write_nyudv2_fixture(tempfile.mkdtemp())
        >>> report = check_segmentation("nyudv2", root, progress=False)
        >>> report.ok, report.counts, len(report.warnings)
        (True, {'train': 4, 'val': 3}, 2)
    """
    spec = get_layout(layout)
    root = Path(root)
    report = CheckReport(spec.name, root)
    if not root.is_dir():
        report.error(root, "data folder does not exist")
        return report
    entries: list[Entry] = []
    for split in spec.splits:
        list_path = root / spec.list_files[split]
        try:
            split_entries, line_problems = parse_list(list_path, spec)
        except BadFileError as error:
            report.error(error.path, error.problem)
            continue
        for number, problem in line_problems:
            report.error(list_path, f"line {number}: {problem}")
        report.counts[split] = len(split_entries)
        if not split_entries and not line_problems:
            report.error(list_path, "list file is empty")
        expected = spec.expected_counts[split]
        if split_entries and len(split_entries) != expected:
            found = len(split_entries)
            report.warn(list_path, f"{found} samples, the published {split} split has {expected}")
        entries.extend(split_entries)

    unique = list(dict.fromkeys(entries))
    reported: set[Path] = set()
    for path, problem in _problems(unique, spec, decode, workers, progress):
        if path not in reported:
            reported.add(path)
            report.error(path, problem)
    return report


def _problems(
    entries: list[Entry],
    layout: SegmentationLayout,
    decode: bool,
    workers: int | None,
    progress: bool,
) -> Iterator[Problem]:
    """The problems of every entry, in list order."""
    if not entries:
        return
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(
        total=len(entries),
        desc=f"checking {layout.name}",
        unit="sample",
        file=sys.stderr,
        disable=None if progress else True,
        leave=False,
    )
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        for problems in pool.map(lambda e: check_entry(e, layout, decode), entries):
            bar.update()
            yield from problems
