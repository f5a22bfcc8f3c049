"""Opening data files (images, list files) with one-line errors: shared by every dataset reader."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from mango.errors import DataError


class BadFileError(DataError):
    """A data file that is missing, undecodable or inconsistent; keeps the path and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False (not OSError) for a name the OS refuses, e.g. too long."""
    try:
        return path.is_file()
    except OSError:
        return False


def open_image(path: Path, modes: tuple[str, ...], what: str, decode: bool = True) -> Image.Image:
    """Open ``path`` (header read), check its PIL mode is in ``modes``, decode fully when ``decode``.

    ``what`` describes the expected format for the error message (e.g. ``"depth must be a
    single-channel 16-bit image"``).

    Raises:
        BadFileError: missing (or a name the OS refuses), undecodable, truncated, or a mode
            outside ``modes``.
    """
    if not is_file(path):
        raise BadFileError(path, "file does not exist")
    try:
        image = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadFileError(path, f"cannot be decoded as an image ({error})") from None
    if image.mode not in modes:
        raise BadFileError(path, f"{what} (PIL mode {image.mode})")
    if decode:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as error:
            raise BadFileError(path, f"cannot be decoded, truncated or corrupt ({error})") from None
    return image


def read_list_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a list file with their 1-based numbers (lines are not stripped).

    Raises:
        BadFileError: the file is missing, unreadable or not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadFileError(path, "list file does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadFileError(path, f"cannot read list file ({error})") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
