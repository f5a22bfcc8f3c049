"""Procedurally generated RGB-D segmentation scenes that need BOTH modalities.

Every scene is a textured background with 2-5 flat objects. An object's class is the product of a
colour family and a depth shape::

    class        colour family        depth shape
    warm dome    warm (red-orange)    raised dome, toward the camera
    warm pit     warm (red-orange)    sunken pit, away from the camera
    cool dome    cool (cyan-blue)     raised dome
    cool pit     cool (cyan-blue)     sunken pit

so the two classes of a colour family differ only in depth and the two classes of a depth shape
differ only in colour. Neither modality leaks the other's cue:

- RGB is flat per object (no shading unless ``shading > 0``, below), with per-object hue jitter inside its family, pixel noise
  and a smooth two-colour background texture drawn from greens, purples and greys (hues that never
  fall in either object family);
- depth is a randomly tilted background plane with pixel noise; an object's relief
  ``h * (1/2 + 1/2 * sqrt(1 - r^2))`` toward (dome) or away from (pit) the camera, with
  ``h ~ U(0.2, 0.4)`` m and ``r`` the object's normalised radial coordinate, is measured from the
  plane and does not depend on colour;
- silhouettes (circle, rotated square, rotated ellipse), sizes (radius ``S/8 .. S/4``) and drawing
  order (later objects occlude earlier ones) are drawn independently of the class.

**Shading.** With ``shading = s > 0`` the RGB image is lit over the depth relief, so RGB carries
a cue of depth (shape from shading). The surface normal of the clean depth map ``d`` (metres,
before noise and misregistration), with the pixel pitch ``W / S`` of a field of view ``W = 2`` m
wide, is ``n ∝ (∂d/∂x, ∂d/∂y, −1)`` (camera coordinates: x right, y down, z away from the
camera); a distant light from the left, 45° off the viewing axis, has unit direction
``l = (−sin 45°, 0, −cos 45°)``. The image is ambient plus Lambertian light,

``rgb = albedo · ((1 − s) + s · max(0, n·l) / (n₀·l))``,  ``n₀ = (0, 0, −1)``,

so ``s`` is the directional share of the light and a surface facing the camera keeps its colour
(the shade only scales value: hue and saturation, so the colour family, are unchanged). A dome's
left flank faces the light and brightens while its right flank darkens; a pit is lit the other
way round. ``s = 0`` skips the step and gives exactly the unshaded scenes.

**Misregistration.** On a real RGB-D rig the depth sensor and the camera are not perfectly
aligned, so a depth pixel does not lie under the RGB pixel of the same index. With
``misregistration = m > 0`` each scene's depth map is shifted against the RGB image by a random
integer offset ``(dy, dx)``, each uniform in ``[-m S, m S]`` pixels and drawn per scene (edges
replicated); the mask stays on the RGB image. A fusion that pairs the two modalities position by
position then sees the depth of the wrong place near every object edge; lining them up needs
content matching across modalities, which is what cross-modal attention claims to add. The
demo uses ``m = 1/8`` (up to 8 pixels at ``S = 64``, one token of the fused stride-8 stage).

Scenes are not stored: item ``i`` of split ``s`` is generated on demand from a generator seeded with
``(seed, s, i)``, so every split is deterministic and the splits are disjoint.

Normalisation: ``rgb = (rgb01 - 0.5) / 0.25`` (about zero mean, unit scale) and
``depth = (metres - 3) / 0.5``; :func:`display_rgb` and :func:`display_depth` map them back to
``[0, 1]`` for pictures.

Example:
    >>> scenes = SyntheticScenes(4, split="val", size=32)
    >>> sample = scenes[0]
    >>> tuple(sample["rgb"].shape), tuple(sample["depth"].shape), tuple(sample["mask"].shape)
    ((3, 32, 32), (1, 32, 32), (32, 32))
    >>> int(sample["mask"].max()) < NUM_CLASSES
    True
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mango.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("background", "warm dome", "warm pit", "cool dome", "cool pit")
NUM_CLASSES: int = len(CLASS_NAMES)
SPLITS: tuple[str, ...] = ("train", "val", "test")

RGB_MEAN, RGB_STD = 0.5, 0.25
DEPTH_MEAN, DEPTH_STD = 3.0, 0.5

#: hue ranges (HSV, in turns) of the object colour families, indexed by family (0 warm, 1 cool)
_FAMILY_HUES = ((-0.03, 0.08), (0.50, 0.64))
#: hue ranges of the background texture: greens and purples, far from both families
_BACKGROUND_HUES = ((0.22, 0.40), (0.72, 0.82))
_RGB_NOISE = 0.03  # standard deviation of the (uniform) pixel noise, in [0, 1] colour units
_DEPTH_NOISE = 0.01  # same, in metres
_MIN_OBJECTS, _MAX_OBJECTS = 2, 5


def _class_id(family: int, dome: bool) -> int:
    """warm dome 1, warm pit 2, cool dome 3, cool pit 4."""
    return 1 + 2 * family + (0 if dome else 1)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` in pixels, each float32 (S, S), read-only."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    y, x = np.meshgrid(centres, centres, indexing="ij")
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _background_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:  # a grey: saturation too low to read as any family
        return _hsv(0.0, rng.uniform(0.0, 0.12), rng.uniform(0.3, 0.9))
    low, high = _BACKGROUND_HUES[rng.integers(len(_BACKGROUND_HUES))]
    return _hsv(rng.uniform(low, high), rng.uniform(0.25, 0.8), rng.uniform(0.3, 0.9))


def _texture(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """Smooth blending weight in [0, 1]: a squashed sum of three random plane waves."""
    angle, phase = rng.uniform(0, np.pi, 3), rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(1.0, 5.0, 3)  # periods per image side
    field = np.zeros_like(y)
    for k in range(3):
        wy, wx = (freq[k] * 2 * np.pi / size) * np.array([np.sin(angle[k]), np.cos(angle[k])])
        field += np.sin(np.float32(wx) * x + np.float32(wy) * y + np.float32(phase[k]))
    return 1.0 / (1.0 + np.exp(-2.0 * field))


def _silhouette(
    rng: np.random.Generator, y: np.ndarray, x: np.ndarray, size: int
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A random circle, rotated square or rotated ellipse of radius ``S/8 .. S/4``.

    Returns the bounding box (a pair of slices into the image) and the normalised radial
    coordinate ``r`` on that box: the shape is ``r < 1``.
    """
    cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
    radius = rng.uniform(size / 8, size / 4)
    extent = 1.5 * radius  # covers the square's corners (sqrt(2) * radius)
    box = (
        slice(max(0, int(cy - extent)), min(size, int(cy + extent) + 1)),
        slice(max(0, int(cx - extent)), min(size, int(cx + extent) + 1)),
    )
    dy, dx = y[box] - np.float32(cy), x[box] - np.float32(cx)
    kind = rng.integers(3)
    if kind == 0:  # circle
        return box, np.sqrt(dy**2 + dx**2) / np.float32(radius)
    angle = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    if kind == 1:  # rotated square of half-side `radius`
        return box, np.maximum(np.abs(u), np.abs(v)) / np.float32(radius)
    aspect = rng.uniform(0.5, 0.8)  # rotated ellipse, semi-axes radius and aspect * radius
    return box, np.sqrt((u / np.float32(radius)) ** 2 + (v / np.float32(aspect * radius)) ** 2)


def shift_replicate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` (H, W) moved by ``(dy, dx)`` pixels, edges replicated: ``out[y, x] = image[y - dy, x - dx]``.

    Example:
        >>> shift_replicate(np.arange(4.0).reshape(1, 4), 0, 1).tolist()
        [[0.0, 0.0, 1.0, 2.0]]
    """
    h, w = image.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[np.ix_(rows, cols)]


#: width of the field of view at the scene, in metres: the pixel pitch of the shading's gradient
SCENE_WIDTH = 2.0
#: unit vector toward the light (camera coordinates x right, y down, z away from the camera):
#: from the left, 45° off the viewing axis
LIGHT = (-np.sqrt(0.5), 0.0, -np.sqrt(0.5))


def lambert_shade(depth: np.ndarray, width: float = SCENE_WIDTH) -> np.ndarray:
    """Lambertian shade of a depth map ``d`` (S, S) in metres, relative to a surface facing the camera.

    With the gradient by central differences at the pixel pitch ``width / S`` (metres per
    metre), the normal ``n = (∂d/∂x, ∂d/∂y, −1) / ‖·‖`` and :data:`LIGHT` ``l``:

    .. math::

        \\mathrm{shade} = \\frac{\\max(0,\\, n \\cdot l)}{n_0 \\cdot l}, \\qquad n_0 = (0, 0, -1),

    1 on a surface facing the camera, above 1 where it faces the light, 0 where it faces away.

    Example:
        >>> x = np.arange(32, dtype=np.float32) + 0.5
        >>> dome = 3.0 - 0.3 * np.sqrt(np.maximum(1 - ((x - 16) / 8) ** 2, 0))[None].repeat(32, 0)
        >>> shade = lambert_shade(dome)
        >>> bool(shade[16, 10] > 1.0 > shade[16, 22]), float(shade[16, 0])
        (True, 1.0)
    """
    pitch = width / depth.shape[-1]
    grad_y, grad_x = np.gradient(depth.astype(np.float64), pitch)
    towards = grad_x * LIGHT[0] + grad_y * LIGHT[1] - LIGHT[2]
    shade = np.maximum(towards, 0.0) / (np.sqrt(1.0 + grad_x**2 + grad_y**2) * -LIGHT[2])
    return shade.astype(np.float32)


def generate_scene(
    size: int, rng: np.random.Generator, misregistration: float = 0.0, shading: float = 0.0
) -> dict[str, np.ndarray]:
    """One scene as numpy arrays (see the module docstring for the recipe).

    Returns ``rgb`` float32 (S, S, 3) in [0, 1], ``depth`` float32 (S, S) in metres (about
    2-4 m), ``mask`` int64 (S, S) with class ids indexing :data:`CLASS_NAMES` (on the RGB image)
    and ``shift`` int64 (2,), the depth map's ``(dy, dx)`` against the RGB image.
    """
    y, x = _grid(size)
    # background: two-colour texture and a plane 2.5-3.5 m away, tilted up to 0.6 m across
    a, b = _background_colour(rng), _background_colour(rng)
    t = _texture(rng, y, x, size)[..., None]
    rgb = b + (a - b) * t
    slope = rng.uniform(-0.6, 0.6, 2) / size  # metres per pixel
    plane = np.float32(rng.uniform(2.5, 3.5)) + (
        np.float32(slope[0]) * (y - size / 2) + np.float32(slope[1]) * (x - size / 2)
    )
    depth = plane.copy()
    mask = np.zeros((size, size), dtype=np.int64)

    for _ in range(rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1)):
        family, dome = int(rng.integers(2)), bool(rng.integers(2))
        box, r = _silhouette(rng, y, x, size)
        inside = r < 1.0
        low, high = _FAMILY_HUES[family]
        colour = _hsv(rng.uniform(low, high), rng.uniform(0.55, 0.95), rng.uniform(0.55, 1.0))
        relief = np.float32(rng.uniform(0.2, 0.4)) * (0.5 + 0.5 * np.sqrt(np.maximum(1 - r * r, 0)))
        # objects stand on (domes) or sink into (pits) the plane, never on what they occlude
        rgb[box][inside] = colour
        depth[box][inside] = (plane[box] + (-relief if dome else relief))[inside]
        mask[box][inside] = _class_id(family, dome)

    if shading > 0:  # no random draw: every other value of the scene is the unshaded one's
        light = np.float32(1 - shading) + np.float32(shading) * lambert_shade(depth)
        rgb = rgb * light[..., None]
    noise = rng.random((size, size, 4), dtype=np.float32) * 2 - 1  # uniform, std 1/sqrt(3)
    rgb = np.clip(rgb + _RGB_NOISE * np.sqrt(3) * noise[..., :3], 0.0, 1.0)
    depth = depth + _DEPTH_NOISE * np.sqrt(3) * noise[..., 3]
    shift = np.zeros(2, dtype=np.int64)
    if misregistration > 0:  # drawn last, so aligned scenes keep every other random draw
        limit = int(round(misregistration * size))
        shift = rng.integers(-limit, limit + 1, size=2)
        depth = shift_replicate(depth, int(shift[0]), int(shift[1]))
    return {"rgb": rgb, "depth": depth, "mask": mask, "shift": shift}


class SyntheticScenes(torch.utils.data.Dataset):
    """``num_scenes`` deterministic RGB-D scenes of one split (see the module docstring).

    Items are dicts: ``rgb`` float32 (3, S, S) normalised, ``depth`` float32 (1, S, S) normalised,
    ``mask`` int64 (S, S) class ids, ``index`` int.
    """

    def __init__(
        self,
        num_scenes: int,
        split: str = "train",
        size: int = 64,
        seed: int = 0,
        misregistration: float = 0.0,
        shading: float = 0.0,
    ) -> None:
        if split not in SPLITS:
            expected = ", ".join(SPLITS)
            raise ConfigError(f"synthetic data split: expected one of {expected}, got {split!r}")
        if num_scenes < 0:
            raise ConfigError(f"synthetic data: number of scenes must be >= 0, got {num_scenes}")
        if size < 16:
            raise ConfigError(f"synthetic data size: must be >= 16 pixels, got {size}")
        if not 0 <= misregistration <= 0.5:
            raise ConfigError(
                f"synthetic data misregistration: must be in [0, 0.5], got {misregistration}"
            )
        if not 0 <= shading <= 1:
            raise ConfigError(f"data.shading: must be in [0, 1], got {shading}")
        self.num_scenes, self.split, self.size, self.seed = num_scenes, split, size, seed
        self.misregistration, self.shading = misregistration, shading

    def __len__(self) -> int:
        return self.num_scenes

    def generator(self, index: int) -> np.random.Generator:
        """The generator of item ``index``, seeded by ``(seed, split, index)``."""
        return np.random.default_rng([self.seed, SPLITS.index(self.split), index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.num_scenes
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene {index} out of range for {self.num_scenes} scenes")
        scene = generate_scene(self.size, self.generator(index), self.misregistration, self.shading)
        rgb = (scene["rgb"].transpose(2, 0, 1) - RGB_MEAN) / RGB_STD
        depth = (scene["depth"][None] - DEPTH_MEAN) / DEPTH_STD
        return {
            "rgb": torch.from_numpy(rgb.astype(np.float32)),
            "depth": torch.from_numpy(depth.astype(np.float32)),
            "mask": torch.from_numpy(scene["mask"]),
            "index": index,
        }


def display_rgb(rgb: Tensor | np.ndarray) -> np.ndarray:
    """Normalised (3, H, W) RGB -> float (H, W, 3) in [0, 1]."""
    array = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    return np.clip(array.transpose(1, 2, 0) * RGB_STD + RGB_MEAN, 0.0, 1.0)


def display_depth(depth: Tensor | np.ndarray) -> np.ndarray:
    """Normalised (1, H, W) or (H, W) depth -> float (H, W) in [0, 1], min-max per image."""
    array = depth.detach().cpu().numpy() if isinstance(depth, Tensor) else np.asarray(depth)
    array = array.reshape(array.shape[-2:]).astype(np.float64)
    low, high = float(array.min()), float(array.max())
    return (array - low) / max(high - low, 1e-12)


def rgb_alone_miou_bound(masks: Tensor | np.ndarray) -> float:
    """The highest mIoU (%) that any prediction from RGB alone can expect on scenes with ``masks``.

    Given the RGB image, a scene's background and each object's colour family can be read
    exactly, but dome against pit is a fair coin: the relief is drawn independently of
    everything RGB shows (colour, silhouette, size, position). So any RGB-only prediction labels
    a fraction ``Q`` (by area, in expectation) of a family's object pixels "dome", and for that
    family's dome and pit areas ``D`` and ``P`` the expected intersections and unions give, to
    first order in a large test set,

    .. math::

        \\mathrm{IoU}_{dome} = \\frac{Q D}{D + Q P}, \\qquad
        \\mathrm{IoU}_{pit} = \\frac{(1 - Q) P}{P + (1 - Q) D}.

    The bound takes the background's IoU as 1 and each family's best ``Q`` (about ½ when
    ``D ≈ P``, where the two IoUs are ⅓ each), so for equal areas it is
    ``(1 + 4/3) / 5 ≈ 46.7 %``. Zero fill and imputation of depth are RGB-only predictions too.
    The bound holds for unshaded scenes (``shading = 0``): shading puts a cue of the relief into
    RGB.

    Example:
        >>> masks = np.array([[0, 1, 2, 3, 4]])  # one pixel of each class
        >>> round(rgb_alone_miou_bound(masks), 1)
        46.7
    """
    masks = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    areas = np.bincount(masks.reshape(-1), minlength=NUM_CLASSES)[:NUM_CLASSES].astype(float)
    q = np.linspace(0.0, 1.0, 2001)
    total = 1.0  # the background
    for family in (0, 1):
        dome, pit = areas[_class_id(family, True)], areas[_class_id(family, False)]
        if dome == 0 or pit == 0:
            name = CLASS_NAMES[_class_id(family, dome == 0)]
            raise ValueError(f"rgb_alone_miou_bound: no pixel of class {name!r} in the masks")
        both = q * dome / (dome + q * pit) + (1 - q) * pit / (pit + (1 - q) * dome)
        total += float(both.max())
    return 100.0 * total / NUM_CLASSES
