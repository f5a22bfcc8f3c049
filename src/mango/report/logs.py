"""Read training logs written by Lightning."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from mango.errors import DataError

#: CSVLogger columns that index a row rather than hold a metric
_INDEX_COLUMNS = ("epoch", "step")


def read_lightning_csv(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Parse a Lightning ``CSVLogger`` ``metrics.csv`` into ``metric -> [(step, value), ...]``.

    Format: a header with ``step`` (and usually ``epoch``) plus one column per metric name; each
    row holds the metrics logged at one step, other cells empty, e.g.::

        epoch,step,train/loss,val/miou
        0,9,1.25,
        0,19,,41.5

    gives ``{"train/loss": [(9, 1.25)], "val/miou": [(19, 41.5)]}``. Points keep file order;
    metrics that never have a value are left out. Raises :class:`DataError` (naming the file and
    line) for a missing file, a missing ``step`` column or a cell that is not a number.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = f.write_text("epoch,step,loss\\n0,4,0.5\\n")
        >>> read_lightning_csv(f)
        {'loss': [(4, 0.5)]}
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected a Lightning metrics.csv)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    if "step" not in columns:
        found = ", ".join(columns) or "no header"
        raise DataError(f"{path}: missing column 'step' (found {found})")
    metrics: dict[str, list[tuple[int, float]]] = {
        name: [] for name in columns if name not in _INDEX_COLUMNS
    }
    for row in reader:
        line = reader.line_num
        step = _number(path, line, "step", row["step"])
        if step is None or not math.isfinite(step):
            raise DataError(f"{path}, line {line}: column 'step' is empty or not finite")
        for name, points in metrics.items():
            value = _number(path, line, name, row.get(name))
            if value is not None:
                points.append((int(step), value))
    return {name: points for name, points in metrics.items() if points}


def _number(path: Path, line: int, column: str, cell: str | None) -> float | None:
    """A cell as a float; ``None`` for an empty (or missing) cell."""
    if cell is None or not cell.strip():
        return None
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{path}, line {line}: column {column!r}: not a number: {cell!r}") from None
