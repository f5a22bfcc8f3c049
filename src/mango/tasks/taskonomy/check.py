"""`mango data check --layout taskonomy`: verify a Taskonomy translation folder.

For each split list (``train_domain.txt``, ``val_domain.txt``) the check reads the sample
templates (a missing or empty list, or a malformed line, is an error) and compares the count
with the published 1000 / 500 (a difference is a warning: subsets and fixtures are fine). Then,
for every listed sample and every checked domain, it validates the file with the reader's own
functions: the file exists and decodes, 16-bit domains (depth, edges) are single-channel 16-bit
(values 0..65535 when stored in a 32-bit container) and 8-bit domains are 8-bit, and all
domains of a sample have the same size. Each bad file gives one error ``"<file>: <problem>"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mango.errors import DataError
from mango.tasks.check import CheckReport
from mango.tasks.files import BadFileError
from mango.tasks.taskonomy.data import (
    LIST_FILES,
    DomainFiles,
    open_domain_image,
    pixels,
    read_templates,
)
from mango.tasks.taskonomy.domains import DOMAINS, PUBLISHED_COUNTS, folder_names

Problem = tuple[Path, str]


def _check_sample(template: str, files: list[DomainFiles]) -> list[Problem]:
    """The problems of one sample's files (at most one per file)."""
    problems: list[Problem] = []
    sizes: dict[Path, tuple[int, int]] = {}
    for domain_files in files:
        path = domain_files.path(template)
        try:
            with open_domain_image(path, domain_files.domain) as image:
                pixels(path, domain_files.domain, image)  # the reader's range check
                sizes[path] = image.size
        except BadFileError as error:
            problems.append((error.path, error.problem))
    if sizes:
        first, (width, height) = next(iter(sizes.items()))
        for path, (w, h) in sizes.items():
            if (w, h) != (width, height):
                problems.append((path, f"size {w}x{h} differs from {width}x{height} ({first})"))
    return problems


def check_taskonomy(
    root: str | os.PathLike[str],
    domains: Sequence[str] | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Check the Taskonomy folder ``root`` for ``domains`` (default: every domain folder found).

    Example:
        >>> import tempfile
        >>> from mango.testing.taskonomy import write_taskonomy_fixture
        >>> root = write_taskonomy_fixture(tempfile.mkdtemp(), ("rgb", "depth_zbuffer"), size=8)
        >>> report = check_taskonomy(root)
        >>> report.ok, report.counts, len(report.warnings)
        (True, {'train': 4, 'val': 3}, 2)
    """
    root = Path(root)
    report = CheckReport("taskonomy", root)
    if not root.is_dir():
        report.error(root, "data folder does not exist")
        return report
    if domains is None:
        domains = [d for d in DOMAINS if any((root / f).is_dir() for f in folder_names(d))]
        if not domains:
            report.error(root, f"no domain folder found (expected some of {', '.join(DOMAINS)})")
            return report
    templates: list[str] = []
    for split in ("train", "val"):
        list_path = root / LIST_FILES[split]
        try:
            split_templates = read_templates(list_path)
        except BadFileError as error:
            report.error(error.path, error.problem)
            continue
        report.counts[split] = len(split_templates)
        if len(split_templates) != PUBLISHED_COUNTS[split]:
            report.warn(
                list_path,
                f"{len(split_templates)} samples, the published {split} "
                f"split has {PUBLISHED_COUNTS[split]}",
            )
        templates.extend(split_templates)
    if not templates:
        return report
    files: list[DomainFiles] = []
    for domain in domains:
        try:
            files.append(DomainFiles(root, domain, templates[0]))
        except DataError as error:
            report.errors.append(str(error))
    workers = workers or min(8, os.cpu_count() or 1)
    reported: set[Path] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        unique = list(dict.fromkeys(templates))
        for problems in pool.map(lambda t: _check_sample(t, files), unique):
            for path, problem in problems:
                if path not in reported:
                    reported.add(path)
                    report.error(path, problem)
    return report
