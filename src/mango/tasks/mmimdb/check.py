"""``mango data check --layout mmimdb``: verify an MM-IMDb folder in either release format.

Errors (the data cannot be used): missing or unreadable files, wrong HDF5 keys, dtypes or shapes,
genre values other than 0/1, split rows outside the file or overlapping, word ids missing from
``metadata.npy``, empty plots, image values outside the Caffe BGR range, malformed json or
``split.json``, missing or undecodable posters, duplicate imdb ids.
Warnings (printed, not fatal): split sizes that differ from the published ones (expected for
subsets), raw genres outside the 27 known names, movies with none of the 23 standard genres.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from mango.tasks.check import CheckReport
from mango.tasks.mmimdb.genres import EXTRA_RAW_GENRES, GENRES, SPLIT_SIZES
from mango.tasks.mmimdb.readers import (
    CAFFE_BGR_MEAN,
    HDF5_ERRORS,
    HDF5_FILE,
    METADATA_FILE,
    RAW_FOLDER,
    SPLIT_FILE,
    Hdf5Index,
    MMIMDbFileError,
    decode_sequence,
    detect_format,
    genre_vector,
    load_vocabulary,
    read_movie_json,
    read_poster,
    read_split_file,
)

#: at most this many row errors of one kind are listed for the HDF5 file; the rest are counted
MAX_ROW_ERRORS = 20
_CHUNK_ROWS = 256


def check_mmimdb(
    root: str | os.PathLike[str], *, decode: bool = True, workers: int | None = None
) -> CheckReport:
    """Check the MM-IMDb folder ``root`` (HDF5 or raw release, detected from its files).

    ``decode`` reads every image (slow on the full release; off: only keys, text and labels);
    ``workers`` threads decode raw posters (default: up to 8, one per CPU).

    Example:
        >>> import tempfile
        >>> from mango.testing.mmimdb import write_mmimdb_hdf5_fixture
        >>> report = check_mmimdb(write_mmimdb_hdf5_fixture(tempfile.mkdtemp()))
        >>> report.ok, report.counts, len(report.warnings)
        (True, {'train': 6, 'dev': 3, 'test': 4}, 3)
    """
    root = Path(root)
    report = CheckReport("mmimdb", root)
    try:
        layout = detect_format(root)
    except MMIMDbFileError as error:
        report.error(error.where, error.problem)
        return report
    if layout == "hdf5":
        source = root / HDF5_FILE
        _check_hdf5(root, report, decode)
    else:
        source = root / SPLIT_FILE
        _check_raw(root, report, decode, workers)
    for split, count in report.counts.items():
        if count == 0:
            report.error(source, f"split {split!r} has no movies")
        elif count != SPLIT_SIZES[split]:
            report.warn(
                source,
                f"split {split!r} has {count} movies, the published split has "
                f"{SPLIT_SIZES[split]} (fine for a subset: use data.strict_sizes=false)",
            )
    return report


def _record(report: CheckReport, path: Path, problems: list[str]) -> None:
    """Add the first :data:`MAX_ROW_ERRORS` problems of one kind and one line counting the rest."""
    for problem in problems[:MAX_ROW_ERRORS]:
        report.error(path, problem)
    if len(problems) > MAX_ROW_ERRORS:
        report.error(path, f"... and {len(problems) - MAX_ROW_ERRORS} more rows like the above")


def _chunks(rows: int) -> Iterable[tuple[int, int]]:
    for start in range(0, rows, _CHUNK_ROWS):
        yield start, min(start + _CHUNK_ROWS, rows)


def _check_hdf5(root: Path, report: CheckReport, decode: bool) -> None:
    path = root / HDF5_FILE
    try:
        index = Hdf5Index(path)
    except MMIMDbFileError as error:
        report.error(error.where, error.problem)
        return
    for split, (start, stop) in index.ranges.items():
        report.counts[split] = stop - start
    ordered = sorted(index.ranges.items(), key=lambda item: item[1])
    for (first, (_, stop)), (second, (start, _)) in zip(ordered, ordered[1:], strict=False):
        if start < stop:
            report.error(path, f"splits {first!r} and {second!r} share rows [{start}, {stop})")
    duplicates = [m for m, n in Counter(index.ids).items() if n > 1]
    if duplicates:
        report.error(
            path, f"{len(duplicates)} imdb ids appear more than once (e.g. {duplicates[0]!r})"
        )
    unlabelled = int((index.labels.sum(1) == 0).sum())
    if unlabelled:
        report.warn(path, f"{unlabelled} movies have none of the 23 genres")
    try:
        vocabulary = load_vocabulary(root / METADATA_FILE)
    except MMIMDbFileError as error:
        report.error(error.where, error.problem)
        vocabulary = None
    try:
        with h5py.File(path, "r") as file:
            if vocabulary is not None:
                _record(report, path, _text_problems(file["sequences"], vocabulary, index.ids))
            if decode:
                _record(report, path, _image_problems(file["images"], index.rows))
    except HDF5_ERRORS as exc:  # the structure reads, but some rows are truncated or corrupt
        report.error(path, f"cannot be read, truncated or corrupt ({exc})")


def _text_problems(sequences: h5py.Dataset, vocabulary: np.ndarray, ids: list[str]) -> list[str]:
    """Rows whose word ids are empty or missing from the vocabulary."""
    problems = []
    for start, stop in _chunks(len(ids)):
        for row, words in enumerate(sequences[start:stop], start):
            try:
                decode_sequence(words, vocabulary, "")
            except MMIMDbFileError as error:
                problems.append(f"sequences row {row} (imdb id {ids[row]}): {error.problem}")
    return problems


def _image_problems(images: h5py.Dataset, rows: int) -> list[str]:
    """Rows whose values cannot be a uint8 image minus the Caffe BGR mean (1 unit of slack)."""
    mean = np.asarray(CAFFE_BGR_MEAN).reshape(1, 3, 1, 1)
    low, high = -mean - 1, 255 - mean + 1
    problems = []
    for start, stop in _chunks(rows):
        chunk = images[start:stop]
        bad = ((chunk < low) | (chunk > high)).reshape(len(chunk), -1).any(1)
        for row in np.flatnonzero(bad) + start:
            values = images[row]
            problems.append(
                f"images row {row} has values in [{values.min()}, {values.max()}], "
                f"outside uint8 BGR minus mean {CAFFE_BGR_MEAN}"
            )
    return problems


def _check_raw(root: Path, report: CheckReport, decode: bool, workers: int | None) -> None:
    split_path = root / SPLIT_FILE
    try:
        splits = read_split_file(split_path)
    except MMIMDbFileError as error:
        report.error(error.where, error.problem)
        return
    for split, ids in splits.items():
        report.counts[split] = len(ids)
    folder = root / RAW_FOLDER
    movies = [movie for ids in splits.values() for movie in ids]
    known = set(GENRES) | set(EXTRA_RAW_GENRES)
    unknown: Counter[str] = Counter()
    unlabelled = 0
    for movie in movies:
        try:
            _, genres = read_movie_json(folder / f"{movie}.json")
        except MMIMDbFileError as error:
            report.error(error.where, error.problem)
            continue
        unknown.update(g for g in genres if g not in known)
        unlabelled += int(not genre_vector(genres).any())
    check: Callable[[Path], str | None] = _poster_problem if decode else _missing_problem
    threads = workers or min(8, os.cpu_count() or 1)
    posters = [folder / f"{movie}.jpeg" for movie in movies]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for poster, problem in zip(posters, pool.map(check, posters), strict=True):
            if problem is not None:
                report.error(poster, problem)
    for name, count in sorted(unknown.items()):
        report.warn(folder, f"genre {name!r} ({count} movies) is not one of the 27 MM-IMDb genres")
    if unlabelled:
        report.warn(folder, f"{unlabelled} movies have none of the 23 genres")


def _poster_problem(path: Path) -> str | None:
    try:
        read_poster(path)
    except MMIMDbFileError as error:
        return error.problem
    return None


def _missing_problem(path: Path) -> str | None:
    return None if path.is_file() else "poster not found"
