"""The result type shared by every `mango data check --layout ...` implementation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CheckReport:
    """What a dataset check found.

    ``errors`` make ``mango data check`` exit non-zero; each is one line ``"<file>: <what is wrong>"``.
    ``warnings`` are printed but do not fail (e.g. split sizes that differ from the published ones,
    which is expected for subsets and fixtures).

    Example:
        >>> r = CheckReport("nyudv2", Path("/data/nyu"))
        >>> r.counts["train"] = 795
        >>> r.error("/data/nyu/rgb/000003.png", "cannot be decoded as an image")
        >>> r.ok
        False
        >>> r.errors
        ['/data/nyu/rgb/000003.png: cannot be decoded as an image']
    """

    layout: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, where: str | Path, message: str) -> None:
        """Record a fatal problem with ``where`` (a file or field)."""
        self.errors.append(f"{where}: {message}")

    def warn(self, where: str | Path, message: str) -> None:
        """Record a non-fatal observation about ``where``."""
        self.warnings.append(f"{where}: {message}")

    @property
    def ok(self) -> bool:
        """True when no error was recorded."""
        return not self.errors

    def summary(self) -> str:
        """One line: layout, root, split counts and the number of problems."""
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items()) or "no splits"
        return (
            f"{self.layout} at {self.root}: {counts}; "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
