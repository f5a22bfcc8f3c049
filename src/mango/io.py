"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or a kill while writing never leaves a truncated file in place of a good one, and a write
that fails (a full disk, no permission) is an :class:`~mango.errors.OutputError` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from mango.errors import MangoError, OutputError


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary temporary file next to ``path``; on success it replaces ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> with atomic_open(target) as f:
        ...     _ = f.write(b"ok")
        >>> target.read_bytes()
        b'ok'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _cannot_write(path, error) from error
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, MangoError):
            raise _cannot_write(path, error) from error
        raise


def _cannot_write(path: Path, error: OSError) -> OutputError:
    kept = "; the previous file is kept" if path.exists() else ""
    return OutputError(f"{path}: cannot write ({error.strerror or error}){kept}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: str | os.PathLike[str], save: Callable[[BinaryIO], None]) -> None:
    """Call ``save(file)`` on a temporary file that then replaces ``path`` (e.g. ``torch.save``)."""
    with atomic_open(path) as f:
        save(f)


class JsonLinesWriter:
    """Accumulate JSON lines per file over a run; every batch rewrites the file atomically.

    The first batch written to a path starts it afresh, so the file always holds whole lines of
    the batches so far (``mango predict`` writes ``predictions.jsonl`` this way).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.jsonl"
        >>> writer = JsonLinesWriter()
        >>> writer.add(path, [{"id": 1}]), writer.add(path, [{"id": 2}])
        (True, False)
        >>> path.read_text().splitlines()
        ['{"id": 1}', '{"id": 2}']
    """

    def __init__(self) -> None:
        self._lines: dict[Path, list[str]] = {}

    def add(self, path: str | os.PathLike[str], records: list[dict[str, Any]]) -> bool:
        """Append ``records`` to ``path``; True when this was the first batch for that path."""
        key = Path(path).resolve()
        first = key not in self._lines
        lines = self._lines.setdefault(key, [])
        lines += [json.dumps(record) for record in records]
        atomic_write_text(path, "".join(f"{line}\n" for line in lines))
        return first
