"""The global batch of a recipe, split over devices, nodes, micro-batches and accumulation.

A config states ``trainer.global_batch``: the samples of one optimizer step, whatever runs them.
:func:`plan_batch` splits it as

.. math::

    G = \\text{nodes} \\times \\text{devices} \\times m \\times a ,

with the largest micro-batch ``m`` that divides the per-device share ``G / (nodes · devices)``
and does not exceed ``trainer.micro_batch``, and ``a`` steps of gradient accumulation for the
rest. Every optimizer step then averages the gradient over the same ``G`` samples (the sampler
draws them by global position, :class:`mango.train.data.SeededSampler`), so the recipe, its
learning-rate schedule and its data order do not depend on the hardware.

Example:
    >>> plan = BatchPlan.split(16, devices=4, micro_batch=2)
    >>> plan.describe()
    'global batch 16 = 4 devices × 2 × accumulate 2'
    >>> BatchPlan.split(8).describe()
    'global batch 8 = 1 device × 8 × accumulate 1'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mango.config import TrainerSettings
from mango.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """``global_batch = nodes × devices × micro_batch × accumulate``."""

    global_batch: int
    devices: int
    nodes: int
    micro_batch: int
    accumulate: int

    @classmethod
    def split(
        cls, global_batch: int, devices: int = 1, nodes: int = 1, micro_batch: int | None = None
    ) -> BatchPlan:
        """Split ``global_batch`` over ``nodes × devices``, each forward at most ``micro_batch``.

        A global batch that the processes cannot share equally is a one-line
        :class:`~mango.errors.ConfigError` naming ``trainer.global_batch``.
        """
        world = devices * nodes
        if global_batch % world:
            where = f"{devices} device{'s' * (devices > 1)}" + (
                f" × {nodes} nodes" if nodes > 1 else ""
            )
            raise ConfigError(
                f"trainer.global_batch: {global_batch} samples cannot be shared equally by "
                f"{where}; use a multiple of {world}"
            )
        share = global_batch // world
        cap = share if micro_batch is None else min(micro_batch, share)
        micro = max(m for m in range(1, cap + 1) if share % m == 0)
        return cls(global_batch, devices, nodes, micro, share // micro)

    @classmethod
    def of(cls, trainer: TrainerSettings) -> BatchPlan:
        """The plan of a config's ``trainer`` section."""
        return cls.split(
            trainer.global_batch, trainer.devices, trainer.num_nodes, trainer.micro_batch
        )

    @property
    def per_device(self) -> int:
        """Samples each device sees per optimizer step (``micro_batch × accumulate``)."""
        return self.micro_batch * self.accumulate

    def describe(self) -> str:
        """The one line ``mango train`` prints, e.g. ``global batch 16 = 4 devices × 2 × accumulate 2``."""
        devices = f"{self.devices} device{'s' * (self.devices > 1)}"
        nodes = f"{self.nodes} nodes × " if self.nodes > 1 else ""
        return (
            f"global batch {self.global_batch} = {nodes}{devices} × {self.micro_batch} "
            f"× accumulate {self.accumulate}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
