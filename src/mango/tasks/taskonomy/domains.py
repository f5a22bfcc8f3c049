"""Taskonomy domains: canonical names, old folder names, short task names and pixel decoding.

Names. The ten domains of the TokenFusion / CEN translation subset are :data:`DOMAINS`. Older
copies of Taskonomy (e.g. ``taskonomy-sample-model-1``) store some of them under other folder
names (:data:`OLD_NAMES`): ``reshade``, ``edge2d`` (2D texture edges), ``edge`` (3D occlusion
edges), ``depth`` (z-buffer), ``mist`` (euclidean distance), ``curvature``, ``segment2d``,
``segment25d``. The paper tables use short task names (:data:`SHORT_NAMES`):

============  ===================  =========================================================
short name    domain               why
============  ===================  =========================================================
``shade``     ``reshading``        "Shade" = re-shaded mesh render
``texture``   ``edge_texture``     "Texture" = 2D (texture) edges, old folder ``edge2d``
``edge``      ``edge_occlusion``   "Edge" sits next to "Texture" in the same tables, so it is
                                   the other edge domain: 3D occlusion edges, whose old
                                   folder is also called ``edge``
``depth``     ``depth_zbuffer``    the old ``depth`` folder is the z-buffer depth
============  ===================  =========================================================

Any canonical name or old name is accepted as well; :func:`canonical_domain` maps every
accepted name to its canonical one and :func:`resolve_domain` finds the folder on disk (new name
first, then the old one).

Decoding (``raw`` = stored pixel value, ``v`` = decoded value in [0, 1], as TokenFusion / CEN)::

    8-bit domains (rgb, normal, reshading, principal_curvature, segment_*):  v = raw / 255
    depth_zbuffer, depth_euclidean (16-bit, 1/512 m):  v = log(1 + raw) · 255 / 11.1 / 255
    edge_texture   (16-bit):                            v = raw · 255 / 11355 / 255
    edge_occlusion (16-bit):                            v = raw · 255 / 11584 / 255

then ``v`` is clamped to [0, 1] and single-channel images are tiled to 3 channels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mango.errors import ConfigError, DataError

#: canonical domain names, in the index order of the TokenFusion / CEN code (0 = rgb, ...)
DOMAINS = (
    "rgb",
    "normal",
    "reshading",
    "depth_euclidean",
    "depth_zbuffer",
    "principal_curvature",
    "edge_occlusion",
    "edge_texture",
    "segment_unsup2d",
    "segment_unsup25d",
)

#: canonical name -> folder name used by older Taskonomy copies
OLD_NAMES = {
    "reshading": "reshade",
    "edge_texture": "edge2d",
    "edge_occlusion": "edge",
    "depth_zbuffer": "depth",
    "depth_euclidean": "mist",
    "principal_curvature": "curvature",
    "segment_unsup2d": "segment2d",
    "segment_unsup25d": "segment25d",
}

#: short task names of the paper tables -> canonical name (see the module docstring)
SHORT_NAMES = {
    "shade": "reshading",
    "texture": "edge_texture",
    "edge": "edge_occlusion",
    "depth": "depth_zbuffer",
}

#: number of samples in the published splits of the translation subset
PUBLISHED_COUNTS = {"train": 1000, "val": 500}


@dataclass(frozen=True)
class Encoding:
    """How a domain is stored: ``bits`` per sample and the map raw -> [0, 1].

    ``log`` false: ``v = raw / scale``; ``log`` true: ``v = log(1 + raw) / scale``.
    """

    bits: int
    scale: float
    log: bool = False

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixel values -> float32 in [0, 1] (clamped), same shape."""
        values = raw.astype(np.float64)
        if self.log:
            values = np.log1p(values)
        return np.clip(values / self.scale, 0.0, 1.0).astype(np.float32)


_EIGHT_BIT = Encoding(8, 255.0)
_DEPTH = Encoding(16, 11.1, log=True)

#: canonical name -> its encoding
ENCODINGS = {
    "rgb": _EIGHT_BIT,
    "normal": _EIGHT_BIT,
    "reshading": _EIGHT_BIT,
    "depth_euclidean": _DEPTH,
    "depth_zbuffer": _DEPTH,
    "principal_curvature": _EIGHT_BIT,
    "edge_occlusion": Encoding(16, 11584.0),
    "edge_texture": Encoding(16, 11355.0),
    "segment_unsup2d": _EIGHT_BIT,
    "segment_unsup25d": _EIGHT_BIT,
}

_ALIASES = {**{old: new for new, old in OLD_NAMES.items()}, **SHORT_NAMES}


def canonical_domain(name: str) -> str:
    """The canonical domain for a canonical, old or short name.

    Example:
        >>> canonical_domain("shade"), canonical_domain("edge2d"), canonical_domain("mist")
        ('reshading', 'edge_texture', 'depth_euclidean')

    Raises:
        ConfigError: the name is not a known domain.
    """
    if name in DOMAINS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = ", ".join(DOMAINS + tuple(_ALIASES))
    raise ConfigError(f"domain {name!r}: unknown Taskonomy domain; choose one of {known}")


def folder_names(name: str) -> tuple[str, ...]:
    """The folder names a domain may have on disk: canonical first, then the old name."""
    canonical = canonical_domain(name)
    old = OLD_NAMES.get(canonical)
    return (canonical, old) if old else (canonical,)


def resolve_domain(root: str | os.PathLike[str], name: str) -> str:
    """The folder of domain ``name`` under ``root`` (canonical folder name preferred).

    Raises:
        DataError: neither the canonical nor the old folder exists.
    """
    root = Path(root)
    candidates = folder_names(name)
    for folder in candidates:
        if (root / folder).is_dir():
            return folder
    looked = " or ".join(f"{c}/" for c in candidates)
    domain = canonical_domain(name)
    raise DataError(f"{root}: no folder for domain {domain!r} (looked for {looked})")


def decode(name: str, raw: np.ndarray) -> Tensor:
    """Stored pixels of domain ``name`` -> float32 ``(3, H, W)`` in [0, 1].

    ``raw`` is ``(H, W)`` or ``(H, W, C)``; single-channel images are tiled to 3 channels and
    an alpha channel (C = 4) is dropped.

    Example:
        >>> decode("edge_texture", np.array([[0, 11355]], dtype=np.uint16))[:, 0, 1].tolist()
        [1.0, 1.0, 1.0]
        >>> round(float(decode("depth", np.array([[511]], dtype=np.uint16))[0, 0, 0]), 6)
        0.562011
    """
    values = ENCODINGS[canonical_domain(name)].decode(np.asarray(raw))
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4) pixels, got {values.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(values[..., :3])).permute(2, 0, 1)
    return tensor.expand(3, -1, -1).contiguous() if tensor.shape[0] == 1 else tensor.contiguous()
