"""Checks shared by the task folders' CLI-fault tests: a failed command says one line, keeps outputs."""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mango.cli import main


class FailingCommand:
    """Run ``mango eval`` / ``mango predict`` on a broken dataset and check how they fail."""

    def __init__(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        self.capsys, self.tmp_path = capsys, tmp_path

    def one_error_line(self, victim: Path) -> None:
        """The command printed exactly one stderr line, naming ``victim``, and no traceback.

        The line starts with the file (``<file>: ...``), or with a row in it (``<file> row N ...``).
        """
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        prefix = f"mango: error: {victim}"
        assert lines[0].startswith((f"{prefix}: ", f"{prefix} row ")), lines

    def eval_keeps_old_metrics(self, checkpoint: Path, root: Path, victim: Path) -> None:
        """``mango eval`` exits 2 with one line; an existing metrics file stays as it was."""
        metrics = self.tmp_path / "metrics.json"
        metrics.write_text('{"score": 99.0}\n')
        self.capsys.readouterr()
        args = ["--checkpoint", str(checkpoint), "--data", str(root), "--out", str(metrics)]
        assert main(["eval", *args]) == 2
        self.one_error_line(victim)
        assert metrics.read_text() == '{"score": 99.0}\n'
        assert sorted(p.name for p in self.tmp_path.iterdir()) == ["data", "metrics.json"]

    def predict_writes_nothing(self, checkpoint: Path, root: Path, victim: Path) -> None:
        """``mango predict`` exits 2 with one line; ``--out`` keeps only what it held before."""
        out = self.tmp_path / "pred"
        out.mkdir()
        (out / "keep.txt").write_text("earlier output\n")
        self.capsys.readouterr()
        args = ["--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out)]
        assert main(["predict", *args]) == 2
        self.one_error_line(victim)
        assert (out / "keep.txt").read_text() == "earlier output\n"
        # Nothing from the failed run: no partial predictions, no staging folder beside --out.
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert not [p for p in self.tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture
def failing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> FailingCommand:
    return FailingCommand(capsys, tmp_path)


class FuzzFiles:
    """File helpers for the readers' fuzz tests."""

    @staticmethod
    def bomb_png(width: int, height: int) -> bytes:
        """A PNG header announcing ``width x height`` pixels (no pixel data): a decompression bomb."""

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")

    @classmethod
    def damage(cls, target: Path, kind: str, offset: float, noise: bytes) -> None:
        """Damage the file ``target`` in place; ``offset`` in [0, 1] picks where.

        ``missing`` deletes it, ``truncate`` cuts it there, ``random`` keeps at most 8 bytes (often a valid magic number)
        and appends ``noise``, ``flip`` XORs ``noise`` into it, ``folder`` replaces it by a
        folder, ``empty`` by an empty file, ``bomb`` by a decompression-bomb PNG.
        """
        data = target.read_bytes()
        cut = int(offset * (len(data) - 1))
        target.unlink()
        if kind == "missing":
            return
        if kind == "truncate":
            target.write_bytes(data[:cut])
        elif kind == "random":
            target.write_bytes(data[: min(cut, 8)] + noise)
        elif kind == "flip":
            flipped = bytearray(data)
            for position, byte in enumerate(noise):
                flipped[(cut + 7919 * position) % len(data)] ^= byte or 1
            target.write_bytes(bytes(flipped))
        elif kind == "folder":
            target.mkdir()
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "bomb":
            target.write_bytes(cls.bomb_png(40_000, 40_000))
        else:
            raise ValueError(f"unknown damage {kind!r}")

    @staticmethod
    @contextmanager
    def private_copy(source: Path) -> Iterator[Path]:
        """A copy of a clean fixture folder, removed afterwards."""
        with tempfile.TemporaryDirectory() as folder:
            yield Path(shutil.copytree(source, Path(folder) / "data"))


@pytest.fixture(scope="session")
def fuzz_files() -> FuzzFiles:
    return FuzzFiles()
