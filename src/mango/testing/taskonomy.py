"""A tiny Taskonomy translation folder written in exactly the layout and encodings of ``docs/data.md``.

Every sample is one random scene (a back wall, a floor and a few boxes at other depths, seen by
a pinhole camera) from which all domains are derived, so they are pixel-aligned and each is a
deterministic function of the scene (translation between them is learnable):

- ``depth_zbuffer``: z in 1/512 m (uint16); ``depth_euclidean``: distance to the camera centre;
- ``normal``: unit normals from the depth gradients, 127-centred RGB (uint8);
- ``reshading``: Lambertian shading ``max(0, n·l)`` (uint8 grey);
- ``rgb``: per-surface colour (with a stripe texture on the wall) times the shading (uint8 RGB);
- ``edge_texture``: gradient magnitude of the rgb luma, up to ~11355 (uint16);
- ``edge_occlusion``: depth discontinuities, up to ~11584 (uint16);
- ``principal_curvature``: 127-centred second derivatives of depth in channels 0 and 1 (uint8);
- ``segment_unsup2d`` / ``segment_unsup25d``: surface ids (uint8 grey; 2.5D also splits by depth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mango.tasks.taskonomy.data import LIST_FILES, PLACEHOLDER
from mango.tasks.taskonomy.domains import DOMAINS, OLD_NAMES, canonical_domain


def make_scene(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Raw pixels of every domain for one random scene of ``size`` x ``size`` pixels."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    focal = 0.8 * size
    u, v = (cols - size / 2 + 0.5) / focal, (rows - size / 2 + 0.5) / focal
    horizon = size * rng.uniform(0.4, 0.6)
    wall = rng.uniform(6.0, 9.0)
    camera_height = rng.uniform(1.0, 1.8)
    below = np.maximum(v - (horizon - size / 2) / focal, 1e-3)
    floor = np.minimum(camera_height / below, wall)
    depth = np.where(rows < horizon, wall, floor)
    surface = np.where(rows < horizon, 0, 1)
    for box in range(int(rng.integers(2, 4))):
        top, left = rng.integers(0, size * 3 // 4, size=2)
        height, width = rng.integers(size // 6, size // 2, size=2)
        inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
        slope = rng.uniform(-0.05, 0.05)
        depth = np.where(inside, rng.uniform(1.5, 5.0) + slope * (cols - left), depth)
        surface = np.where(inside, 2 + box, surface)

    gy, gx = np.gradient(depth)
    normal = np.stack([-gx, -gy, np.ones_like(depth) * 0.5], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = np.array([0.4, -0.5, 0.77])
    shading = np.clip(normal @ (light / np.linalg.norm(light)), 0.0, 1.0) * 0.8 + 0.2

    colours = rng.uniform(40, 255, size=(8, 3))
    stripes = 0.85 + 0.15 * np.sign(np.sin(cols * rng.uniform(0.5, 1.2)))
    texture = np.where(surface == 0, stripes, 1.0)
    rgb = colours[surface] * (shading * texture)[..., None]
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    ly, lx = np.gradient(luma)
    dy, dx = np.gradient(depth)
    cyy, cxx = np.gradient(dy, axis=0), np.gradient(dx, axis=1)
    distance = depth * np.sqrt(1.0 + u**2 + v**2)
    depth_steps = np.minimum((depth // 2.0).astype(np.int64), 3)

    def u8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def u16(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, 65535).astype(np.uint16)

    return {
        "rgb": u8(rgb),
        "normal": u8((normal + 1.0) * 127.5),
        "reshading": u8(shading * 255.0),
        "depth_zbuffer": u16(depth * 512.0),
        "depth_euclidean": u16(distance * 512.0),
        "principal_curvature": u8(
            np.stack(
                [127 + 60 * np.tanh(cxx), 127 + 60 * np.tanh(cyy), np.full_like(cxx, 127)], axis=-1
            )
        ),
        "edge_texture": u16(np.hypot(lx, ly) / 100.0 * 11355.0),
        "edge_occlusion": u16(np.minimum(np.hypot(dx, dy), 1.0) * 11584.0),
        "segment_unsup2d": u8(surface * 30),
        "segment_unsup25d": u8(surface * 30 + depth_steps * 7),
    }


def write_taskonomy_fixture(
    root: str | os.PathLike[str],
    domains: Sequence[str] = DOMAINS,
    n_train: int = 4,
    n_val: int = 3,
    size: int = 32,
    old_names: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny Taskonomy translation folder under ``root``; return ``root``.

    Writes ``{domain}/point_{p}_view_{v}_domain_{domain}.png`` for every domain and sample, and
    ``train_domain.txt`` / ``val_domain.txt`` whose lines hold the literal ``{domain}``
    placeholder. With ``old_names`` the domains that have an old name (``reshade``, ``edge2d``,
    ``depth``, ...) use it for both the folder and the file name.

    Example:
        >>> import tempfile
        >>> root = write_taskonomy_fixture(tempfile.mkdtemp(), ("rgb", "depth"), 2, 1, 8, True)
        >>> sorted(p.name for p in root.iterdir())
        ['depth', 'rgb', 'train_domain.txt', 'val_domain.txt']
        >>> (root / "val_domain.txt").read_text()
        '{domain}/point_2_view_2_domain_{domain}.png\\n'
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    canonical = list(dict.fromkeys(canonical_domain(d) for d in domains))
    rng = np.random.default_rng(seed)
    names = [f"point_{i}_view_{i % 3}" for i in range(n_train + n_val)]
    for name in names:
        scene = make_scene(rng, size)
        for domain in canonical:
            folder = OLD_NAMES.get(domain, domain) if old_names else domain
            path = root / folder / f"{name}_domain_{folder}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene[domain]).save(path)
    for split, split_names in (("train", names[:n_train]), ("val", names[n_train:])):
        lines = "".join(f"{PLACEHOLDER}/{n}_domain_{PLACEHOLDER}.png\n" for n in split_names)
        (root / LIST_FILES[split]).write_text(lines, encoding="utf-8")
    return root
