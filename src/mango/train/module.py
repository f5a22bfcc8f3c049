"""The LightningModule that trains any task: task loss + λ · flow NLL (bits/dim)."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor, nn

from mango.config import RunConfig, dump_yaml
from mango.errors import DataError, MangoError
from mango.flows import ActNorm, InvertibleCrossAttention, NonFiniteFlowError
from mango.models.fusion.filler import attach_imputers, fillers, imputer_parameters
from mango.models.missing import presence
from mango.models.task_model import TaskModel
from mango.tasks.base import Sample, Task
from mango.train.batch import BatchPlan
from mango.train.checkpoint import check_architecture, metadata
from mango.train.data import DATA_FAILURE
from mango.train.health import FlowHealthMonitor


class NonFiniteError(MangoError):
    """Training produced NaN or Inf; nothing is saved from that step."""


def is_distributed() -> bool:
    """Whether this process is in an initialised default process group (a DDP rank)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


Problem = str | DataError  # what stops a step: a description of non-finite values, or bad data


def first_failure(problem: Problem | None, device: torch.device) -> tuple[int, Problem] | None:
    """``(rank, problem)`` of the first process whose ``problem`` is not None, or None.

    In a distributed run every rank calls it: all learn whether any rank failed, so all stop at
    the same step instead of waiting in the gradient all-reduce for a rank that raised. Each step
    costs one all-reduce of a flag; only a failure gathers the messages. A single process gets
    its own ``problem`` back.
    """
    if not is_distributed():
        return None if problem is None else (0, problem)
    failed = torch.tensor([problem is not None], dtype=torch.int32, device=device)
    torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
    if not failed.item():
        return None
    problems: list[Problem | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(problems, problem)
    return next((rank, p) for rank, p in enumerate(problems) if p is not None)


def first_non_finite_module(model: nn.Module, batch: Sample) -> str:
    """Re-run ``model(batch)`` and name the first module whose output is not finite."""
    found: list[str] = []
    handles = []

    def hook(name: str):
        def check(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensors = output if isinstance(output, tuple | list) else [output]
            if not found and any(
                isinstance(t, Tensor) and t.is_floating_point() and not torch.isfinite(t).all()
                for t in tensors
            ):
                found.append(f"{name} ({type(_module).__name__})")

        return check

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(batch)
    except NonFiniteFlowError:
        pass  # the hooks have already seen the first non-finite output
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else "no module output (the loss itself)"


def gate_modules(model: nn.Module) -> list[InvertibleCrossAttention]:
    """The ICA layers of ``model`` whose strength is learned (signed and gated forms)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, InvertibleCrossAttention) and (m.signed or m.gate is not None)
    ]


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ICA strength (or gate) scalars of every flow in ``model``."""
    return [m.strength if m.signed else m.gate for m in gate_modules(model)]


def build_optimizer(model: TaskModel, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW (or Adam) over three groups: backbone at ``optim.lr``, head at ``lr · head_lr_mult``,
    ICA strengths at the head's rate times ``gate_lr_mult`` and without weight decay.

    The fused kernel updates every parameter in one call: with a flow's many small tensors the
    per-tensor update was about 5x slower on a CPU (docs/performance.md). It is used where this
    torch has it for the parameters' device, except under mixed precision (``16-mixed``,
    ``bf16-mixed``) with gradient clipping: Lightning's mixed-precision plugin refuses to clip
    the gradients of an optimizer that unscales them itself.
    """
    optim = cfg.optim
    backbone = model.backbone_parameters()
    gates = gate_parameters(model)
    gate_ids = {id(p) for p in gates}
    head = [p for p in model.head_parameters() if id(p) not in gate_ids]
    head_lr = optim.lr * optim.head_lr_mult
    groups = [
        {"params": [p for p in backbone if p.requires_grad], "lr": optim.lr},
        {"params": [p for p in head if p.requires_grad], "lr": head_lr},
        {  # ICA strengths: linear gates, never decayed towards the identity
            "params": [p for p in gates if p.requires_grad],
            "lr": head_lr * optim.gate_lr_mult,
            "weight_decay": 0.0,
        },
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    options = {"betas": optim.betas, "weight_decay": optim.weight_decay}
    mixed = cfg.trainer.precision in ("16-mixed", "bf16-mixed")
    if not (mixed and cfg.optim.grad_clip):
        reason = fused_unsupported([p for group in groups for p in group["params"]])
        if reason is None:
            return cls(groups, fused=True, **options)
        logging.getLogger(__name__).warning("optim: %s; using the per-tensor update", reason)
    return cls(groups, **options)


def fused_unsupported(params: list[Tensor]) -> str | None:
    """Why this torch has no fused Adam(W) kernel for ``params``, or ``None`` when it has one.

    The same test torch makes when ``fused=True`` is asked (floating parameters on a device in
    its list of fused devices); CPUs are in that list from torch 2.4.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - torch without the fused optimizers
        return f"torch {torch.__version__} has no fused Adam"
    supported = _get_fused_kernels_supported_devices()
    for p in params:
        if p.device.type not in supported:
            return f"torch {torch.__version__} has no fused Adam for {p.device.type} parameters"
        if not p.is_floating_point():
            return f"fused Adam needs floating parameters, got {p.dtype}"
    return None


def lr_lambda(cfg: RunConfig):
    """Warmup (linear) then poly / cosine / constant decay over ``trainer.max_steps``."""
    warmup, total, optim = cfg.optim.warmup_steps, cfg.trainer.max_steps, cfg.optim

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if optim.schedule == "poly":
            return (1 - progress) ** optim.poly_power
        if optim.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_model(task: Task[Any], cfg: RunConfig) -> TaskModel:
    """``task.build_model(cfg)``, with the fillers' imputers when ``model.imputer`` is set
    (:func:`~mango.models.fusion.filler.attach_imputers`: drawn from their own generator, so
    the task model's initialisation is the same with and without them)."""
    model = task.build_model(cfg)
    if cfg.model.imputer:
        attach_imputers(model)
    return model


class MangoModule(pl.LightningModule):
    """Trains ``task.build_model(cfg)``; validation feeds the task's metric."""

    def __init__(self, task: Task[Any], cfg: RunConfig) -> None:
        super().__init__()
        self.task, self.cfg = task, cfg
        self.model = build_model(task, cfg)
        self.strict_loading = False  # check_architecture is strict but for filler statistics
        self.val_metric = task.metric(cfg)
        self.last_val: dict[str, Any] = {}
        self.val_health = FlowHealthMonitor(self.model)
        self.gates = gate_modules(self.model)  # found once: logged every step

    def forward(self, batch: Sample) -> Any:
        return self.model(batch)

    def on_train_start(self) -> None:
        """Data-initialise the flows' ActNorms on the first optimizer step's whole batch.

        ActNorm sets itself from the first batch it sees in training. Left to the first forward,
        that would be the first micro-batch of each device, so gradient accumulation would change
        the initial flow. Here each rank runs its share of the first global batch (the samples
        of step 0, :mod:`mango.train.data`) through the model once, without gradients, and
        ActNorm averages the moments over ranks: the initialisation depends on the global batch
        only. Other buffers (BatchNorm statistics) are restored afterwards. Nothing happens when
        the model is already initialised (a resumed run) or has no ActNorm.
        """
        waiting = [m for m in self.model.modules() if isinstance(m, ActNorm) and not m.initialized]
        if not waiting:
            return
        loader = self.trainer.train_dataloader
        sampler, plan = loader.sampler, BatchPlan.of(self.cfg.trainer)
        sampler.set_epoch(self.global_step // self.cfg.trainer.steps_per_checkpoint)
        keys = itertools.islice(iter(sampler), plan.per_device)
        batch = loader.collate_fn([loader.dataset[key] for key in keys])
        if first_failure(batch.get(DATA_FAILURE), self.device) is not None:
            return  # every rank skips; the first step reports the unreadable sample
        kept = {name: b.clone() for name, b in self.model.named_buffers()}
        batch = move_data_to_device(batch, self.device)
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            self.model(batch)
        actnorm_buffers = {id(m.initialized) for m in waiting}
        for name, buffer in self.model.named_buffers():
            if id(buffer) not in actnorm_buffers:
                buffer.copy_(kept[name])

    def on_train_epoch_start(self) -> None:
        # A training "epoch" is one checkpoint interval. Its data order and in-model randomness
        # (dropout) depend only on the interval index derived from the step count, so a run
        # resumed from an interval boundary reproduces an uninterrupted run exactly. (Lightning
        # counts an extra, empty epoch when it resumes from an end-of-epoch checkpoint, so
        # ``current_epoch`` cannot be used.)
        interval = self.global_step // self.cfg.trainer.steps_per_checkpoint
        torch.manual_seed(self.cfg.trainer.seed * 1_000_003 + interval)
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(interval)

    def _non_finite(self, batch: Sample, what: str) -> str:
        where = first_non_finite_module(self.model, batch)
        return f"non-finite {what}; first non-finite output in {where}"

    def _losses(self, batch: Sample) -> tuple[Tensor, Tensor, Tensor | None] | str:
        """``(loss, task loss, flow bits/dim)`` of a training step, or what was not finite."""
        try:
            outputs = self.model(batch)
        except NonFiniteFlowError:
            return self._non_finite(batch, "flow tokens")
        task_loss = self.task.loss(outputs, batch)
        bits = None if outputs.bits_per_dim is None else self._nll(outputs.bits_per_dim, batch)
        loss = task_loss
        if bits is not None and self.cfg.loss.nll_weight > 0:
            loss = loss + self.cfg.loss.nll_weight * bits
        if outputs.aux_loss is not None:  # a baseline fusion's own loss (weighted)
            loss = loss + outputs.aux_loss
        if not torch.isfinite(loss):
            return self._non_finite(
                batch, "task loss" if not torch.isfinite(task_loss) else "flow NLL or fusion loss"
            )
        return loss, task_loss, bits

    def _nll(self, bits: Tensor, batch: Sample) -> Tensor:
        """The flow's training NLL: the mean bits/dim of the samples that have every modality.

        A sample that lacks one (``data.modality_dropout``, ``data.missing``) carries the zero
        rule's tokens, not data: fitting the density to them would teach it the "absent"
        pattern that imputation and corruption detection must tell apart (docs/missing.md).
        """
        present = presence(batch, self.model.modalities, bits.shape[0], bits.device)
        if present is None:
            return bits.mean()
        complete = present.all(1)
        return bits[complete].mean() if bool(complete.any()) else bits.sum() * 0.0

    def _stop_on_failure(self, problem: Problem | None) -> None:
        """Raise on every rank, before any rank enters a collective, if any rank has a problem.

        A non-finite value is a :class:`NonFiniteError`; a sample that could not be read
        (:class:`~mango.train.data.Reported`) is its own :class:`DataError`, which a distributed
        run tags with the rank and step. Rank 0 reports; the others stop quietly.
        """
        failure = first_failure(problem, self.device)
        if failure is None:
            return
        rank, problem = failure
        distributed = is_distributed()
        duplicate = distributed and torch.distributed.get_rank() != 0
        if isinstance(problem, DataError):
            if not distributed:
                raise problem
            raise DataError(
                f"{problem} (rank {rank}, step {self.global_step})", duplicate=duplicate
            )
        on_rank = f" on rank {rank}" if distributed else ""
        raise NonFiniteError(
            f"step {self.global_step}{on_rank}: {problem}; no weights were written from "
            "this step (lower optim.lr or check the inputs)",
            duplicate=duplicate,
        )

    def training_step(self, batch: Sample, batch_idx: int) -> Tensor:
        unread = batch.get(DATA_FAILURE)
        losses = unread if unread is not None else self._losses(batch)
        self._stop_on_failure(losses if isinstance(losses, str | DataError) else None)
        assert not isinstance(losses, str | DataError)  # first_failure returns this rank's own
        loss, task_loss, bits = losses
        size = len(next(v for v in batch.values() if isinstance(v, Tensor)))
        if bits is not None:
            self.log("train/bits_per_dim", bits, batch_size=size)
        if self.gates:
            strength = torch.stack([g.strength_value.detach().abs() for g in self.gates]).mean()
            self.log("train/attention_strength", strength, batch_size=size)
        self.log("train/task_loss", task_loss, batch_size=size, prog_bar=True)
        self.log("train/loss", loss, batch_size=size)
        return loss

    def validation_step(self, batch: Sample, batch_idx: int) -> None:
        self._stop_on_failure(batch.get(DATA_FAILURE))
        outputs = self.task.predict(self.model, batch, self.cfg)
        self.task.update_metric(self.val_metric, outputs, batch)
        bits = outputs.bits_per_dim
        if bits is not None:
            size = len(bits)
            self.log("val/bits_per_dim", bits.mean(), batch_size=size, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        if self.val_health:
            self.val_health.__enter__()

    def on_validation_epoch_end(self) -> None:
        results = self.val_metric.compute()
        self.val_metric.reset()
        if self.val_health:
            self.val_health.__exit__()
            health = self.val_health.summary()
            for name, flow in health.get("flow_health", {}).items():
                for key in ("attention_effect", "round_trip_error"):
                    results[key if len(health["flow_health"]) == 1 else f"{name}/{key}"] = flow[key]
        self.last_val = results
        for key, value in results.items():
            if isinstance(value, int | float) or (isinstance(value, Tensor) and value.numel() == 1):
                self.log(f"val/{key}", float(value), prog_bar=key == self.task.monitor)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Fold the step's token sums (every micro-batch, summed over processes) into the
        fillers' training means (:mod:`mango.models.fusion.filler`)."""
        reduce = None
        if is_distributed():

            def reduce(tensor: Tensor) -> Tensor:
                torch.distributed.all_reduce(tensor)
                return tensor

        for filler in fillers(self.model):
            filler.commit(reduce)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping; with an imputer, its gradient is clipped on its own, so that the
        task parameters' clipped gradient is the one they get without an imputer."""
        imputer = {id(p) for p in imputer_parameters(self.model)}
        if not imputer or gradient_clip_val is None or gradient_clip_algorithm == "value":
            return super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        params = [p for group in optimizer.param_groups for p in group["params"]]
        task = [p for p in params if id(p) not in imputer]
        own = [p for p in params if id(p) in imputer]
        for part in (task, own):
            torch.nn.utils.clip_grad_norm_(part, gradient_clip_val)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # .update: the run record (mango.train.record.RunRecord) is already in checkpoint["mango"]
        checkpoint.setdefault("mango", {}).update(metadata(self.cfg.model_dump(mode="json")))
        checkpoint["mango"]["config_yaml"] = dump_yaml(self.cfg)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_architecture(checkpoint["state_dict"], self.state_dict(), "checkpoint")
