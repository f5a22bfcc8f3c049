"""Built-in synthetic multimodal data for ``mango demo`` and the tests (no files, no download)."""

from mango.data.synthetic import (
    CLASS_NAMES,
    NUM_CLASSES,
    SyntheticScenes,
    display_depth,
    display_rgb,
    generate_scene,
    rgb_alone_miou_bound,
)

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "SyntheticScenes",
    "display_depth",
    "display_rgb",
    "generate_scene",
    "rgb_alone_miou_bound",
]
