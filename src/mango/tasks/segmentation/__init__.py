"""RGB-D semantic segmentation (NYUDv2, SUN RGB-D): layouts, readers, transforms, metrics, checks.

The task classes live in :mod:`mango.tasks.segmentation.task` (imported lazily by the registry).
"""

from mango.tasks.segmentation.check import check_segmentation
from mango.tasks.segmentation.inference import predict_logits
from mango.tasks.segmentation.layouts import (
    IGNORE_INDEX,
    LAYOUTS,
    NYU40_CLASS_NAMES,
    NYUDV2,
    SUNRGBD,
    DepthNormalization,
    SegmentationLayout,
    get_layout,
)
from mango.tasks.segmentation.metrics import SegmentationMetrics
from mango.tasks.segmentation.palette import colorize, palette
from mango.tasks.segmentation.readers import RGBDSegmentationDataset
from mango.tasks.segmentation.transforms import EvalTransform, TrainTransform

__all__ = [
    "IGNORE_INDEX",
    "LAYOUTS",
    "NYU40_CLASS_NAMES",
    "NYUDV2",
    "SUNRGBD",
    "DepthNormalization",
    "EvalTransform",
    "RGBDSegmentationDataset",
    "SegmentationLayout",
    "SegmentationMetrics",
    "TrainTransform",
    "check_segmentation",
    "colorize",
    "get_layout",
    "palette",
    "predict_logits",
]
