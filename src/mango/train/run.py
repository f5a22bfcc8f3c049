"""Train, evaluate and predict: the functions behind ``mango train|eval|predict``."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from tqdm import tqdm

from mango.config import (
    RunConfig,
    apply_overrides,
    dump_yaml,
    read_yaml,
    upgrade_stored,
    validate,
)
from mango.errors import CheckpointError, ConfigError, Interrupted, MangoError
from mango.flows import attention_disabled
from mango.io import atomic_write_json, atomic_write_text
from mango.models.task_model import TaskModel
from mango.tasks.base import Task, get_task
from mango.train.batch import BatchPlan
from mango.train.callbacks import SaveLast, StopOnSigint, TolerantCSVLogger, save_run
from mango.train.checkpoint import (
    MangoCheckpointIO,
    check_architecture,
    read_checkpoint,
    saved_step,
)
from mango.train.corrupt import CorruptSetting, corruption_wrap
from mango.train.data import MangoDataModule, eval_loader
from mango.train.detect import detecting, scores_path
from mango.train.health import FlowHealthMonitor
from mango.train.missing import MissingSetting, filling_for, missing_wrap
from mango.train.module import MangoModule, build_model, is_distributed
from mango.train.record import RunRecord, evaluation_record

log = logging.getLogger(__name__)
CHECKPOINT = Path("checkpoints") / "last.ckpt"
#: what ``evaluate(ablate=...)`` can switch off
ABLATIONS = ("attention",)


def build_config(
    raw: dict[str, Any],
    source: str,
    overrides: Sequence[str] = (),
    data_dir: str | Path | None = None,
) -> tuple[Task[Any], RunConfig]:
    """Validate a raw config (plus ``--set`` overrides and ``--data``) for its task."""
    raw = apply_overrides(raw, overrides)
    if data_dir is not None:
        raw.setdefault("data", {})["root"] = str(data_dir)
    if "task" not in raw:
        raise ConfigError(f"{source}: field task: missing (e.g. task: synthetic)")
    task = get_task(str(raw["task"]))
    return task, validate(task.config_class, raw, source)


def load_config(
    path: str | Path, overrides: Sequence[str] = (), data_dir: str | Path | None = None
) -> tuple[Task[Any], RunConfig]:
    """Read and validate a YAML run config."""
    return build_config(read_yaml(path), str(path), overrides, data_dir)


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    val_metrics: dict[str, Any]
    rank: int = 0  # the process's global rank: in a DDP run every rank returns a result


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*_pytree.*")
    # Resuming from the final checkpoint of a run whose --max-steps ended mid-interval: mango's
    # sampler is seeded per interval (global_step // steps_per_checkpoint), so the resumed run
    # restarts that interval's sample order; interval-boundary checkpoints resume exactly.
    warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")


def train(
    task: Task[Any],
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[pl.Callback] = (),
    announce: bool = False,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (``checkpoints/last.ckpt``, ``config.yaml``, logs, weights).

    ``announce``: print the split of the global batch on stdout when training starts (``mango
    train`` does; the demo and ``mango ablate`` have their own progress lines)."""
    _quiet_lightning()
    out_dir = Path(out_dir)
    checkpoint = out_dir / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise ConfigError(
            f"{out_dir}: already holds a run ({checkpoint}); pass --resume to continue it "
            "or choose another --out"
        )
    if resume and not checkpoint.exists():
        raise CheckpointError(f"{checkpoint}: nothing to resume (no checkpoint in {out_dir})")
    plan = BatchPlan.of(cfg.trainer)  # a global batch the devices cannot share fails here
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)  # also seeds the model init
    module = MangoModule(task, cfg)
    previous = None
    if resume:
        saved = read_checkpoint(checkpoint)
        check_architecture(saved["state_dict"], module.state_dict(), checkpoint)
        previous = saved["mango"].get("record")
        check_same_recipe(saved, cfg, checkpoint)
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = dump_yaml(cfg)
    had_config = (out_dir / "config.yaml").exists()
    atomic_write_text(out_dir / "config.yaml", config_yaml)
    t = cfg.trainer
    log_version = f"version_{len(metrics_logs(out_dir))}"
    stopper = StopOnSigint()
    io = MangoCheckpointIO()
    weights = out_dir / "weights.safetensors"
    trainer = pl.Trainer(
        default_root_dir=out_dir,
        max_steps=t.max_steps,
        max_epochs=-1,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=[  # one version folder per (re)start, so resuming never deletes earlier logs
            TolerantCSVLogger(out_dir, name="logs", version=log_version),
            pl.loggers.TensorBoardLogger(out_dir, name="logs", version=log_version),
        ],
        callbacks=[
            RunRecord(cfg, previous, announce),
            stopper,
            SaveLast(io, checkpoint, weights, config_yaml, stopper),
            *callbacks,
        ],
        accumulate_grad_batches=plan.accumulate,
        enable_checkpointing=False,
        plugins=[io],
        check_val_every_n_epoch=t.val_every,
        log_every_n_steps=t.log_every,
        gradient_clip_val=cfg.optim.grad_clip,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn" if t.accelerator in ("cpu", "auto") else False,
        use_distributed_sampler=False,
    )
    if t.precision == "64-true":
        # Lightning restores a checkpoint before it converts the module to float64: loaded into a
        # float32 module, the saved float64 weights would be rounded and a resume would not match
        module.double()
    if t.compile:
        module.model.compile()  # in place: the state dict keeps its keys
    try:
        trainer.fit(  # Lightning reads the checkpoint through MangoCheckpointIO: weights-only
            module,
            datamodule=MangoDataModule(task, cfg, module.model.modalities),
            ckpt_path=checkpoint if resume else None,
        )
        if not (trainer.interrupted or stopper.requested):
            save_run(trainer, io, checkpoint, weights, module.model, config_yaml)
    except MangoError:
        # A run that failed before its first checkpoint leaves nothing (rank 0 owns the folder).
        if trainer.is_global_zero and not checkpoint.exists():
            shutil.rmtree(out_dir / "logs" / log_version, ignore_errors=True)
            if not had_config:
                (out_dir / "config.yaml").unlink(missing_ok=True)
            for folder in (out_dir / "logs", *created):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    if is_distributed():
        # Every rank has returned from fit: leave the group here. A gloo group left to the
        # interpreter's exit can abort the process after the run is saved ("terminate called
        # without an active exception", exit -6).
        torch.distributed.destroy_process_group()
    if trainer.interrupted or stopper.requested:
        kept = (
            f"{checkpoint} (step {saved_step(checkpoint)}) is kept"
            if checkpoint.exists()
            else "no checkpoint was written yet"
        )
        raise Interrupted(
            f"training stopped at step {trainer.global_step}; {kept}; continue with --resume"
        )
    return TrainResult(checkpoint, trainer.global_step, dict(module.last_val), trainer.global_rank)


def metrics_logs(run_dir: str | Path) -> list[Path]:
    """The CSV metric logs of a run, one per (re)start, oldest first."""
    found = Path(run_dir).glob("logs/version_*/metrics.csv")
    return sorted(found, key=lambda p: int(p.parent.name.removeprefix("version_")))


def check_same_recipe(saved: dict[str, Any], cfg: RunConfig, checkpoint: str | Path) -> None:
    """A resumed run keeps the global batch of its checkpoint (devices and micro-batch may change).

    The global batch, unlike its split, changes what an optimizer step averages, so resuming at
    another one would mix two recipes in one run: a one-line :class:`ConfigError`."""
    stored = upgrade_stored(saved["mango"]["config"]).get("trainer", {})
    before = stored.get("global_batch", cfg.trainer.global_batch)
    if before != cfg.trainer.global_batch:
        raise ConfigError(
            f"trainer.global_batch: {checkpoint} was trained at a global batch of {before}, "
            f"not {cfg.trainer.global_batch}; resume at {before} (only devices and "
            "trainer.micro_batch may change) or start a new run"
        )


def model_from(
    saved: dict[str, Any],
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Task[Any], RunConfig, TaskModel]:
    """Rebuild the model of a read checkpoint ``saved`` (its stored config, ``--data`` applied)."""
    task, cfg = build_config(
        upgrade_stored(saved["mango"]["config"]),
        f"{checkpoint} (stored config)",
        overrides,
        data_dir,
    )
    model = build_model(task, cfg)
    state = {
        k.removeprefix("model."): v
        for k, v in saved["state_dict"].items()
        if k.startswith("model.")
    }
    check_architecture(state, model.state_dict(), checkpoint)
    model.load_state_dict(state, strict=False)  # strict but for the fillers' statistics
    return task, cfg, model.eval()


def load_trained(
    checkpoint: str | Path, data_dir: str | Path | None = None, overrides: Sequence[str] = ()
) -> tuple[Task[Any], RunConfig, TaskModel]:
    """Rebuild the model stored in a checkpoint (config from the checkpoint, ``--data`` applied)."""
    return model_from(read_checkpoint(checkpoint), checkpoint, data_dir, overrides)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    split: str = "test",
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    ablate: str | None = None,
    missing: MissingSetting | None = None,
    corrupt: CorruptSetting | None = None,
    scores: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on ``split``; written to ``out`` as JSON when given.

    Models with a flow add its health (:class:`~mango.train.health.FlowHealthMonitor`).
    ``record`` holds the checkpoint's training record and one of this evaluation
    (:mod:`mango.train.record`).
    ``ablate="attention"`` evaluates with every flow's cross-token attention switched off.
    ``missing`` makes modalities absent (filled as its ``fill`` says); the setting and, for
    imputation, its cost and likelihoods are added to the results. ``corrupt`` breaks one
    modality of a seeded share of the samples and adds the detection AUROCs and the blame
    (:mod:`mango.train.detect`); the per-sample scores go to ``scores`` (default: beside
    ``out``).
    """
    if ablate not in (None, *ABLATIONS):
        raise ConfigError(f"--ablate: expected one of {', '.join(ABLATIONS)}, got {ablate!r}")
    began = time.perf_counter()
    saved = read_checkpoint(checkpoint)
    task, cfg, model = model_from(saved, checkpoint, data_dir, overrides)
    if corrupt is not None and missing is not None:
        raise ConfigError("--corrupt: evaluates with every modality present; drop --missing")
    if scores is not None and corrupt is None:
        raise ConfigError("--scores: needs --corrupt MOD:KIND[:STRENGTH]")
    if corrupt is None:
        wrap = missing_wrap(task, cfg, split, model, missing, checkpoint)
    else:
        wrap = corruption_wrap(corrupt, model.modalities)
    device = _device()
    model.to(device)
    cfg = task.prepare_eval(model, cfg)
    metric = task.metric(cfg).to(device)
    bits: list[torch.Tensor] = []
    loader = eval_loader(task, cfg, split, wrap=wrap)
    health = FlowHealthMonitor(model)
    if ablate and not health:
        raise ConfigError(f"--ablate {ablate}: {checkpoint} holds a model without a flow")
    switched_off = attention_disabled(model) if ablate == "attention" else nullcontext()
    detection = detecting(task, cfg, model, corrupt)
    with health, switched_off, filling_for(model, missing) as imputed, detection as detect:
        for batch in tqdm(loader, desc=f"eval {split}", disable=not progress, leave=False):
            batch = _to_device(batch, device)
            outputs = task.predict(model, batch, cfg)
            task.update_metric(metric, outputs, batch)
            if detect is not None:
                detect.update(outputs, batch)
            if outputs.bits_per_dim is not None:
                bits.append(outputs.bits_per_dim.float().cpu())
    results: dict[str, Any] = dict(metric.compute())
    if bits:
        results["bits_per_dim"] = float(torch.cat(bits).mean())
    results.update(health.summary())
    if ablate:
        results["ablate"] = ablate
    if missing is not None:
        results.update(missing.describe())
        results["missing_table_source"] = loader.dataset.source
        results.update(imputed.as_dict())
    if detect is not None:
        results.update(detect.summary(scores_path(out, scores)))
    results.update(task.eval_settings(cfg))
    results["split"] = split
    results["checkpoint"] = str(checkpoint)
    results["samples"] = len(loader.dataset)
    results["record"] = {
        "training": saved["mango"].get("record"),
        "evaluation": evaluation_record(device, time.perf_counter() - began, results["samples"]),
    }
    if out is not None:
        atomic_write_json(out, results)
    return results


@torch.no_grad()
def predict(
    checkpoint: str | Path,
    data_dir: str | Path | None,
    out_dir: str | Path,
    split: str = "test",
    overrides: Sequence[str] = (),
    progress: bool = True,
    missing: MissingSetting | None = None,
) -> list[Path]:
    """Write the task's prediction files for every sample of ``split`` into ``out_dir``.

    Files are written into a staging folder beside ``out_dir`` and moved in only after every
    sample succeeded: a run that fails on a bad sample leaves ``out_dir`` as it was.
    ``missing`` makes modalities absent, as in :func:`evaluate`.
    """
    task, cfg, model = load_trained(checkpoint, data_dir, overrides)
    wrap = missing_wrap(task, cfg, split, model, missing, checkpoint)
    device = _device()
    model.to(device)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        staged: list[Path] = []
        loader = eval_loader(task, cfg, split, wrap=wrap)
        with filling_for(model, missing):
            for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
                batch = _to_device(batch, device)
                outputs = task.predict(model, batch, cfg)
                staged += task.write_predictions(cfg, outputs, batch, staging)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            final = out_dir / path.relative_to(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
        return [out_dir / p.relative_to(staging) for p in staged]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
