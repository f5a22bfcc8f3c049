"""The interface every task implements, and the registry that finds a task by name.

A task owns everything dataset-specific: its config sections, readers and transforms, the model
it builds from the shared fusion components, its loss, metric and prediction writer. The training
code in :mod:`mango.train` drives any task through this interface only.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mango.config import RunConfig
from mango.errors import ConfigError
from mango.tasks.check import CheckReport

Sample = dict[str, Any]
Transform = Callable[[Sample, torch.Generator | None], Sample]


class Task(ABC):
    """One learning problem (dataset family + model + loss + metric)."""

    name: ClassVar[str]
    config_class: ClassVar[type[RunConfig]]
    #: the key of the headline validation metric (higher is better), e.g. ``"miou"``
    monitor: ClassVar[str]

    @abstractmethod
    def build_model(self, cfg: RunConfig) -> nn.Module:
        """The model; ``model(batch)`` returns an output object with a ``bits_per_dim`` field."""

    @abstractmethod
    def dataset(self, cfg: RunConfig, split: str) -> Dataset[Sample]:
        """The untransformed samples of ``split`` (``train``, ``val`` or ``test``)."""

    @abstractmethod
    def transform(self, cfg: RunConfig, train: bool) -> Transform:
        """Per-sample transform ``(sample, generator) -> sample``; random only when ``train``."""

    @abstractmethod
    def loss(self, outputs: Any, batch: Sample) -> Tensor:
        """The task loss (a scalar); the NLL term is added by the trainer."""

    @abstractmethod
    def metric(self, cfg: RunConfig) -> nn.Module:
        """A fresh metric (torchmetrics-style ``update``/``compute``/``reset``)."""

    @abstractmethod
    def update_metric(self, metric: nn.Module, outputs: Any, batch: Sample) -> None:
        """Feed one batch of outputs to ``metric``."""

    def predict(self, model: nn.Module, batch: Sample, cfg: RunConfig) -> Any:
        """Outputs used for evaluation (override for sliding windows, multi-scale, ...)."""
        return model(batch)

    def prepare_eval(self, model: nn.Module, cfg: RunConfig) -> RunConfig:
        """Settings chosen on the validation split before evaluating (e.g. a threshold)."""
        return cfg

    def eval_settings(self, cfg: RunConfig) -> dict[str, Any]:
        """Evaluation settings recorded next to the metrics (e.g. scales and flip)."""
        return {}

    @abstractmethod
    def write_predictions(
        self, cfg: RunConfig, outputs: Any, batch: Sample, out_dir: Path
    ) -> list[Path]:
        """Write human-viewable predictions of one batch under ``out_dir``; return the paths."""

    def missing_order(self, cfg: RunConfig, split: str, count: int) -> np.ndarray | None:
        """A shipped order of ``split``'s samples for missing-modality tables (``None``: seeded)."""
        return None

    def check_data(self, root: Path) -> CheckReport:
        """Check a dataset folder for this task (``mango data check``)."""
        raise ConfigError(f"task {self.name!r} has no on-disk data to check")


#: task name -> "module:Class" (imported lazily so `mango --help` stays fast)
TASKS = {
    "synthetic": "mango.tasks.segmentation.task:SyntheticTask",
    "nyudv2": "mango.tasks.segmentation.task:NYUDv2Task",
    "sunrgbd": "mango.tasks.segmentation.task:SUNRGBDTask",
    "taskonomy": "mango.tasks.translation.task:TaskonomyTask",
    "mmimdb": "mango.tasks.classification.task:MMIMDbTask",
    "tensors": "mango.tasks.tensors.task:TensorsTask",
}


def get_task(name: str) -> Task:
    """Instantiate the task called ``name``."""
    if name not in TASKS:
        raise ConfigError(f"field task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    try:
        task_class = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"field task: task {name!r} is not available ({error})") from None
    return task_class()
