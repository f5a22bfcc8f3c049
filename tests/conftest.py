"""Shared by every test folder: a stand-in for the code a malicious pickle carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class Payload:
    """Pickled into a file, it makes unpickling that file call ``exec``, which creates ``marker``.

    A loader that runs code from files creates the marker; a safe one refuses the file first.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'x').close()",)


@pytest.fixture
def payload(tmp_path: Path) -> Payload:
    """A :class:`Payload` whose marker ``tmp_path / "payload-ran"`` does not exist yet."""
    return Payload(tmp_path / "payload-ran")
