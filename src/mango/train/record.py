"""The record of how a number was made: batch split, seed, software, commit, devices, wall time.

Every checkpoint carries a training record (``checkpoint["mango"]["record"]``, written by
:class:`RunRecord`), ``mango eval`` copies it into its JSON beside a record of the evaluation
itself, and ``mango info --checkpoint FILE`` prints it (:func:`describe`). A run resumed on other
hardware keeps one entry per (re)start in ``starts``.

Example:
    >>> facts = environment()
    >>> sorted(facts)[:4]
    ['commit', 'cpu', 'cuda', 'dirty']
"""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

import mango
from mango.config import RunConfig
from mango.train.batch import BatchPlan

#: the training facts, in the order ``mango info`` prints them
TRAINING_FACTS = (
    "global_batch",
    "devices",
    "nodes",
    "micro_batch",
    "accumulate",
    "precision",
    "seed",
    "optimizer_steps",
    "samples_seen",
    "wall_time_s",
    "device_names",
    "mango",
    "commit",
    "dirty",
    "torch",
    "lightning",
    "cuda",
    "python",
    "cpu",
)


@functools.cache
def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout that holds the running mango, or ``(None, None)``
    for an installed package (or a machine without git)."""
    root = Path(mango.__file__).resolve().parents[2]  # <checkout>/src/mango/__init__.py
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(changes)


@functools.cache
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """A readable name of ``device``: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_name()
    return device.type


def environment() -> dict[str, Any]:
    """The software and machine: versions, git commit, CPU and visible GPUs."""
    import lightning

    commit, dirty = git_commit()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "mango": mango.__version__,
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda,
        "cpu": cpu_name(),
        "gpus": gpus,
    }


class RunRecord(pl.Callback):
    """Writes the record into every checkpoint; with ``announce``, rank 0 prints the batch split
    (:meth:`BatchPlan.describe`) on stdout when training starts.

    ``previous``: the record of the checkpoint being resumed (its ``starts`` are kept and its
    wall time is added to).
    """

    def __init__(
        self, cfg: RunConfig, previous: dict[str, Any] | None = None, announce: bool = False
    ) -> None:
        self.cfg, self.plan, self.announce = cfg, BatchPlan.of(cfg.trainer), announce
        self.previous_starts: list[dict[str, Any]] = list((previous or {}).get("starts", []))
        self.environment = environment()
        self.began, self.first_step, self.devices = time.perf_counter(), 0, [cpu_name()]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.first_step = trainer.global_step
        used = getattr(trainer.strategy, "parallel_devices", None) or [trainer.strategy.root_device]
        self.devices = [device_name(d) for d in used]
        if self.announce and trainer.is_global_zero:
            print(self.plan.describe(), flush=True)

    def record(self, step: int) -> dict[str, Any]:
        """The record of a checkpoint written at optimizer step ``step``."""
        this_start = {
            "from_step": self.first_step,
            "to_step": step,
            **self.plan.as_dict(),
            "device_names": self.devices,
            "commit": self.environment["commit"],
            "wall_time_s": round(time.perf_counter() - self.began, 3),
        }
        starts = [*self.previous_starts, this_start]
        return {
            **self.plan.as_dict(),
            "precision": self.cfg.trainer.precision,
            "seed": self.cfg.trainer.seed,
            "optimizer_steps": step,
            "samples_seen": step * self.plan.global_batch,
            "wall_time_s": round(sum(s["wall_time_s"] for s in starts), 3),
            "device_names": self.devices,
            **self.environment,
            "starts": starts,
        }

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint.setdefault("mango", {})["record"] = self.record(trainer.global_step)


def evaluation_record(device: torch.device, seconds: float, samples: int) -> dict[str, Any]:
    """What an evaluation ran on: the environment, its device, wall time and sample count."""
    return {
        **environment(),
        "device_names": [device_name(device)],
        "wall_time_s": round(seconds, 3),
        "samples": samples,
    }


def describe(record: dict[str, Any] | None, fields: Sequence[str] = TRAINING_FACTS) -> str:
    """``record`` as aligned ``field: value`` lines (``mango info``), restarts last."""
    if not record:
        return "no run record (the checkpoint was written by an earlier mango)"
    width = max(len(f) for f in fields)
    lines = [f"{f:<{width}}  {_text(record.get(f))}" for f in fields if f in record]
    starts = record.get("starts", [])
    if len(starts) > 1:
        lines.append(f"{'starts':<{width}}  {len(starts)} (resumed):")
        lines += [
            f"  steps {s['from_step']}-{s['to_step']}: "
            f"{BatchPlan(**{k: s[k] for k in BatchPlan.__dataclass_fields__}).describe()}, "
            f"{_text(s['device_names'])}, {s['wall_time_s']:.0f} s"
            for s in starts
        ]
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, list):
        counts = {v: value.count(v) for v in value}
        return ", ".join(f"{n} × {v}" if n > 1 else str(v) for v, n in counts.items()) or "none"
    if value is None:
        return "-"
    return str(value)
