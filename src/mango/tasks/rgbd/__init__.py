"""RGB-D semantic segmentation (NYUDv2, SUN RGB-D): layouts, readers, transforms, metrics, checks.

The task classes live in :mod:`mango.tasks.rgbd.task` (imported lazily by the registry).
"""

from mango.tasks.rgbd.check import check_segmentation
from mango.tasks.rgbd.data import RGBDSegmentationDataset
from mango.tasks.rgbd.inference import predict_logits
from mango.tasks.rgbd.layouts import (
    IGNORE_INDEX,
    LAYOUTS,
    NYU40_CLASS_NAMES,
    NYUDV2,
    SUNRGBD,
    DepthNormalization,
    SegmentationLayout,
    get_layout,
)
from mango.tasks.rgbd.metrics import SegmentationMetrics
from mango.tasks.rgbd.palette import colorize, palette
from mango.tasks.rgbd.transforms import EvalTransform, TrainTransform

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
