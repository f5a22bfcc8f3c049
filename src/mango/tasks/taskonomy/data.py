"""Reader for the Taskonomy translation subset (TokenFusion / CEN layout, see ``docs/data.md``).

Layout::

    ROOT/{domain}/point_407_view_2_domain_{domain}.png
    ROOT/train_domain.txt   one line per sample: "{domain}/point_407_view_2_domain_{domain}.png"
    ROOT/val_domain.txt     (also used for the "test" split)

Each line is a template: ``{domain}`` is replaced per modality. The first path component is the
domain's folder (canonical name, or the old name when only that exists, see
:func:`~mango.tasks.taskonomy.domains.resolve_domain`); in the rest of the path ``{domain}`` is
replaced by the token the files actually use (the folder name, else the canonical or old name,
chosen once per domain from the first listed sample). A line without ``{domain}`` whose first
component is a domain folder (``rgb/point_1_view_0_domain_rgb.png``) is turned into a template.

Bad files raise :class:`~mango.tasks.files.BadFileError` (a
:class:`~mango.errors.DataError`) with the one-line message ``"<file>: <what is wrong>"``; the
data check (:mod:`mango.tasks.taskonomy.check`) uses the same functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mango.errors import ConfigError
from mango.tasks.files import BadFileError, is_file, open_image, read_list_lines
from mango.tasks.taskonomy.domains import (
    DOMAINS,
    ENCODINGS,
    OLD_NAMES,
    canonical_domain,
    decode,
    folder_names,
    resolve_domain,
)

PLACEHOLDER = "{domain}"
#: split -> list file (the protocol evaluates on the validation list)
LIST_FILES = {"train": "train_domain.txt", "val": "val_domain.txt", "test": "val_domain.txt"}
#: PIL modes of a single-channel 16-bit image ("I" = 32-bit container some writers use)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: PIL modes accepted for 8-bit domains
EIGHT_BIT_MODES = ("L", "LA", "P", "RGB", "RGBA", "RGBX")

Sample = dict[str, Any]


def list_file(root: Path, split: str) -> Path:
    """The list file of ``split`` (``train``; ``val`` and ``test`` both read ``val_domain.txt``)."""
    if split not in LIST_FILES:
        raise ConfigError(f"split: unknown split {split!r}; choose one of {', '.join(LIST_FILES)}")
    return root / LIST_FILES[split]


def _template(line: str) -> str | None:
    """A list line as a ``{domain}`` template, or None when it cannot be one."""
    if PLACEHOLDER in line:
        return line
    parts = PurePosixPath(line).parts
    if len(parts) < 2:
        return None
    try:
        canonical = canonical_domain(parts[0])
    except ConfigError:
        return None
    if parts[0] not in folder_names(canonical):
        return None
    rest = "/".join(parts[1:]).replace(f"domain_{parts[0]}", f"domain_{PLACEHOLDER}")
    return f"{PLACEHOLDER}/{rest}"


def read_templates(path: Path) -> list[str]:
    """The sample templates of a list file.

    A template is a relative path of at least two components (``{domain}/<file>``) that does
    not leave the root (no ``..``).

    Raises:
        BadFileError: the file is missing, unreadable, empty, or a line is not a template.
    """
    templates = []
    for number, line in read_list_lines(path):
        line = line.strip()
        template = _template(line)
        parts = PurePosixPath(template or "/").parts
        if template is None or parts[0].startswith("/") or len(parts) < 2 or ".." in parts:
            raise BadFileError(
                path, f"line {number}: {line!r} is not a '{PLACEHOLDER}/...' sample path"
            )
        templates.append(template)
    if not templates:
        raise BadFileError(path, "list file is empty")
    return templates


def sample_name(template: str) -> str:
    """``"{domain}/point_407_view_2_domain_{domain}.png"`` -> ``"point_407_view_2"``."""
    stem = PurePosixPath(template).stem
    return stem.replace(f"_domain_{PLACEHOLDER}", "").replace(PLACEHOLDER, "")


class DomainFiles:
    """Maps a template to the file of one domain under ``root``.

    ``folder`` is the domain's folder on disk; ``token`` replaces ``{domain}`` in the rest of the
    path, picked from (folder, canonical, old name) as the first whose file exists for
    ``probe`` (a template), defaulting to the folder name.
    """

    def __init__(self, root: Path, domain: str, probe: str | None = None) -> None:
        self.root = root
        self.domain = canonical_domain(domain)
        self.folder = resolve_domain(root, self.domain)
        self.token = self.folder
        if probe is not None:
            tokens = dict.fromkeys((self.folder, self.domain, OLD_NAMES.get(self.domain)))
            for token in (t for t in tokens if t):
                if is_file(self._path(probe, token)):
                    self.token = token
                    break

    def _path(self, template: str, token: str) -> Path:
        parts = PurePosixPath(template).parts
        if parts[0] == PLACEHOLDER:
            rest = [p.replace(PLACEHOLDER, token) for p in parts[1:]]
            return self.root.joinpath(self.folder, *rest)
        return self.root.joinpath(*(p.replace(PLACEHOLDER, self.folder) for p in parts))

    def path(self, template: str) -> Path:
        """The file of this domain for the sample ``template``."""
        return self._path(template, self.token)


def open_domain_image(path: Path, domain: str, decode_pixels: bool = True) -> Image.Image:
    """Open ``path`` and check that its pixel format fits ``domain`` (8- or 16-bit).

    Raises:
        BadFileError: missing, undecodable, or not the bit depth the domain is stored in.
    """
    bits = ENCODINGS[canonical_domain(domain)].bits
    modes = SIXTEEN_BIT_MODES if bits == 16 else EIGHT_BIT_MODES
    kind = "a single-channel 16-bit" if bits == 16 else "an 8-bit"
    return open_image(path, modes, f"{domain} must be {kind} image", decode_pixels)


def pixels(path: Path, domain: str, image: Image.Image) -> np.ndarray:
    """The raw pixel array of an opened image: (H, W) for grey / 16-bit, (H, W, 3) for colour."""
    if image.mode in ("P", "RGBA", "RGBX"):
        image = image.convert("RGB")
    elif image.mode == "LA":
        image = image.convert("L")
    array = np.asarray(image)
    if image.mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
        raise BadFileError(path, f"{domain} values outside the 16-bit range 0..65535")
    return array


def load_domain(path: Path, domain: str) -> Tensor:
    """Read one file of ``domain`` -> float32 ``(3, H, W)`` in [0, 1] (see the domain decoding)."""
    with open_domain_image(path, domain) as image:
        return decode(domain, pixels(path, domain, image))


class TaskonomyPairs(Dataset[Sample]):
    """Samples ``inputs -> target`` of one split of the Taskonomy translation subset.

    Each item is a dict with one float32 ``(3, H, W)`` tensor in [-1, 1] per input domain, keyed
    by its canonical name (``"reshading"``, ``"edge_texture"``, ...), the target under
    ``"target"``, and ``"name"`` (e.g. ``"point_407_view_2"``). Values are ``2 v - 1`` with ``v``
    the decoded [0, 1] value. Domains may be given by canonical, old or short names. The list
    file is read when the dataset is built, image files when an item is read; every file of a
    sample must have the size of the first input's file. ``transform(sample)`` is applied last.

    Example:
        >>> import tempfile
        >>> from mango.testing.taskonomy import write_taskonomy_fixture
        >>> root = write_taskonomy_fixture(tempfile.mkdtemp(), domains=("rgb", "reshading",
        ...                                "edge_texture"), n_train=2, n_val=1, size=16)
        >>> data = TaskonomyPairs(root, ["shade", "texture"], "rgb", "test")
        >>> item = data[0]
        >>> len(data), sorted(item), tuple(item["target"].shape)
        (1, ['edge_texture', 'name', 'reshading', 'target'], (3, 16, 16))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        inputs: Sequence[str],
        target: str,
        split: str,
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BadFileError(self.root, "data folder does not exist")
        if isinstance(inputs, str) or not inputs:
            raise ConfigError(f"inputs: expected a list of domains from {', '.join(DOMAINS)}")
        self.inputs = [canonical_domain(name) for name in inputs]
        if len(set(self.inputs)) != len(self.inputs):
            raise ConfigError(f"inputs: a domain is listed twice ({', '.join(inputs)})")
        self.target = canonical_domain(target)
        self.split = split
        self.templates = read_templates(list_file(self.root, split))
        probe = self.templates[0]
        self.files = {d: DomainFiles(self.root, d, probe) for d in (*self.inputs, self.target)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.templates)

    def paths(self, index: int) -> dict[str, Path]:
        """The file of every domain (inputs, then target) of sample ``index``."""
        template = self.templates[index]
        return {domain: files.path(template) for domain, files in self.files.items()}

    def __getitem__(self, index: int) -> Sample:
        paths = self.paths(index)
        images = {domain: load_domain(path, domain) for domain, path in paths.items()}
        first = self.inputs[0]
        height, width = images[first].shape[-2:]
        for domain, image in images.items():
            if tuple(image.shape[-2:]) != (height, width):
                h, w = image.shape[-2:]
                raise BadFileError(
                    paths[domain],
                    f"size {w}x{h} differs from {first} {width}x{height} ({paths[first]})",
                )
        sample: Sample = {d: images[d].mul(2.0).sub_(1.0) for d in self.inputs}
        sample["target"] = images[self.target].mul(2.0).sub_(1.0)
        sample["name"] = sample_name(self.templates[index])
        if self.transform is not None:
            sample = self.transform(sample)
        return sample
