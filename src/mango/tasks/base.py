"""The interface every task implements, and the registry that finds a task by name.

A task owns everything dataset-specific: its config sections, readers and transforms, the model
it builds from the shared fusion components, its loss, metric and prediction writer. The training
code in :mod:`mango.train` drives any task through this interface only.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from mango.config import RunConfig
from mango.errors import ConfigError
from mango.models.scores import softmax_scores
from mango.models.task_model import TaskModel, TaskOutput
from mango.tasks.check import CheckReport
from mango.tasks.transforms import Sample, Transform

__all__ = ["TASKS", "ConfigT", "Sample", "Task", "Transform", "get_task"]

#: the run config type of a task (a :class:`~mango.config.RunConfig` with its own sections)
ConfigT = TypeVar("ConfigT", bound=RunConfig)


class Task(ABC, Generic[ConfigT]):
    """One learning problem (dataset family + model + loss + metric), configured by ``ConfigT``."""

    name: ClassVar[str]
    config_class: ClassVar[type[RunConfig]]
    #: the key of the headline validation metric (higher is better), e.g. ``"miou"``
    monitor: ClassVar[str]

    @abstractmethod
    def build_model(self, cfg: ConfigT) -> TaskModel:
        """The model; ``model(batch)`` returns a :class:`~mango.models.task_model.TaskOutput`."""

    @abstractmethod
    def dataset(self, cfg: ConfigT, split: str) -> Dataset[Sample]:
        """The untransformed samples of ``split`` (``train``, ``val`` or ``test``)."""

    @abstractmethod
    def transform(self, cfg: ConfigT, train: bool) -> Transform:
        """Per-sample transform ``(sample, generator) -> sample``; random only when ``train``."""

    @abstractmethod
    def loss(self, outputs: TaskOutput, batch: Sample) -> Tensor:
        """The task loss (a scalar); the NLL term is added by the trainer."""

    @abstractmethod
    def metric(self, cfg: ConfigT) -> nn.Module:
        """A fresh metric (torchmetrics-style ``update``/``compute``/``reset``)."""

    @abstractmethod
    def update_metric(self, metric: nn.Module, outputs: TaskOutput, batch: Sample) -> None:
        """Feed one batch of outputs to ``metric``."""

    def predict(self, model: TaskModel, batch: Sample, cfg: ConfigT) -> TaskOutput:
        """Outputs used for evaluation (override for sliding windows, multi-scale, ...)."""
        return model(batch)

    def head_scores(self, outputs: TaskOutput, cfg: ConfigT) -> dict[str, Tensor]:
        """Per-sample anomaly scores ``(B,)`` of the task head, higher = more anomalous
        (:mod:`mango.models.scores`): a softmax head's ``neg_msp`` and ``energy`` by default,
        none for an output without ``logits``."""
        logits = getattr(outputs, "logits", None)
        return {} if logits is None else softmax_scores(logits)

    def prepare_eval(self, model: TaskModel, cfg: ConfigT) -> ConfigT:
        """Settings chosen on the validation split before evaluating (e.g. a threshold)."""
        return cfg

    def eval_settings(self, cfg: ConfigT) -> dict[str, Any]:
        """Evaluation settings recorded next to the metrics (e.g. scales and flip)."""
        return {}

    @abstractmethod
    def write_predictions(
        self, cfg: ConfigT, outputs: TaskOutput, batch: Sample, out_dir: Path
    ) -> list[Path]:
        """Write human-viewable predictions of one batch under ``out_dir``; return the paths."""

    def missing_order(self, cfg: ConfigT, split: str, count: int) -> np.ndarray | None:
        """A shipped order of ``split``'s samples for missing-modality tables (``None``: seeded)."""
        return None

    def check_data(self, root: Path) -> CheckReport:
        """Check a dataset folder for this task (``mango data check``)."""
        raise ConfigError(f"task {self.name!r} has no on-disk data to check")


#: task name -> "module:Class" (imported lazily so `mango --help` stays fast)
TASKS = {
    "synthetic": "mango.tasks.rgbd.task:SyntheticTask",
    "nyudv2": "mango.tasks.rgbd.task:NYUDv2Task",
    "sunrgbd": "mango.tasks.rgbd.task:SUNRGBDTask",
    "taskonomy": "mango.tasks.taskonomy.task:TaskonomyTask",
    "mmimdb": "mango.tasks.mmimdb.task:MMIMDbTask",
    "tensors": "mango.tasks.tensors.task:TensorsTask",
}


def get_task(name: str) -> Task[Any]:
    """Instantiate the task called ``name``."""
    if name not in TASKS:
        raise ConfigError(f"field task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    try:
        task_class = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"field task: task {name!r} is not available ({error})") from None
    return task_class()
