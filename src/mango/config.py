"""Run configuration: YAML files validated by pydantic, one model per section.

A run config has the sections ``task``, ``data``, ``model``, ``flow``, ``fusion``, ``loss``, ``optim`` and
``trainer``. ``data`` and ``model`` are defined by each task (see :mod:`mango.tasks`); the others
are shared and defined here. Unknown or mistyped keys are errors (``extra="forbid"``), reported as
one line naming the file and the field. ``--set a.b=c`` overrides parse ``c`` as YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mango.errors import ConfigError
from mango.flows import PARTITIONS


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataSection(Section):
    """Fields every task's ``data`` section has (tasks add their own)."""

    modality_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="training: one modality of a sample is absent with this probability",
    )
    missing: list[str] = Field(
        default_factory=list,
        description="training: modalities absent for a fixed share of samples (missing_rate)",
    )
    missing_rate: float | None = Field(
        None, ge=0, le=1, description="with missing: the share (split evenly); None = all"
    )


class ModelSection(Section):
    """Fields every task's ``model`` section has (tasks add their own)."""

    imputer: bool = Field(
        False,
        description="also train, on detached tokens, a small regressor of each modality's tokens "
        "at the fused stages from the others' (for --fill regress; never changes the task path)",
    )


class FlowSettings(Section):
    """The MANGO flow used for fusion (docs/design.md)."""

    blocks: int = Field(
        12, ge=1, description="number of MANGO blocks (paper: 12; ablation 6/8/12/16)"
    )
    partitions: list[Literal["mmca", "imca", "lica"]] = Field(
        default_factory=lambda: list(PARTITIONS),
        description="ICA partitions per block ([] = coupling-only blocks, an ablation)",
    )
    attention: Literal["signed", "gated", "softmax", "half", "identity_plus"] = Field(
        "signed", description="ICA form (docs/flows.md): signed I + βN (default) or c0 I + c1 P"
    )
    strength_bound: float = Field(
        0.5, gt=0, lt=1, description="β_max of the signed form: β = β_max tanh(b)"
    )
    coupling: Literal["mlp", "attention"] = Field(
        "mlp", description="coupling conditioner: per-token MLP, or self-attention over all tokens"
    )
    coupling_hidden: int = Field(64, ge=1)
    detach_nll: bool = Field(True, description="keep the NLL gradient out of the encoders")
    memory_saving: bool = Field(
        False, description="rebuild activations by inversion in backward instead of storing them"
    )


class FusionSettings(Section):
    """The baseline fusions' settings (``model.fusion`` other than mango; docs/baselines.md).

    Defaults are the published ones (each method's paper and released code, docs/baselines.md); the
    depth of ``transformer``, ``cross_attention``, ``tokenfusion`` and ``geminifusion`` is
    matched to the MANGO flow of the same config unless ``layers`` is given.
    """

    layers: int | None = Field(
        None, ge=1, description="layers of a layered baseline; None = match the flow's parameters"
    )
    heads: int | None = Field(None, ge=1, description="attention heads; None = max(1, dim // 64)")
    ffn_ratio: float | None = Field(
        None, gt=0, description="FFN hidden = ratio · dim; None = 4, or the budget rule's ratio"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the baseline layers")
    threshold: float = Field(0.02, gt=0, lt=1, description="tokenfusion: exchange threshold θ")
    sparsity_weight: float = Field(
        1e-4, ge=0, description="tokenfusion: λ of the summed L1 score loss (code default)"
    )
    fusion_heads: int = Field(
        8, ge=1, description="geminifusion: heads of the pixel-wise attention"
    )
    mix_ffn: bool = Field(
        True, description="tokenfusion/geminifusion: 3x3 depth-wise conv in the FFN (needs a grid)"
    )
    reduction: int = Field(1, ge=1, description="cmx: channel reduction r of FRM and FFM")
    lambda_c: float = Field(0.5, ge=0, description="cmx: λ_C of the channel rectification")
    lambda_s: float = Field(0.5, ge=0, description="cmx: λ_S of the spatial rectification")


class LossSettings(Section):
    nll_weight: float = Field(1.0, ge=0, description="λ in task loss + λ · NLL (bits/dim)")


class OptimSettings(Section):
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(6e-5, gt=0, description="learning rate of the encoders (backbone)")
    head_lr_mult: float = Field(10.0, gt=0, description="fusion, flow and head use lr × this")
    gate_lr_mult: float = Field(
        1.0, gt=0, description="ICA strengths (no weight decay) use the head lr × this"
    )
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = 1.0
    grad_clip: float | None = Field(1.0, gt=0)


#: ``trainer.batch_size`` (per device) was replaced by ``trainer.global_batch``
RENAMED_BATCH = (
    "trainer.batch_size: replaced by trainer.global_batch, the samples of one optimizer step over "
    "all devices (batch_size was per device: global_batch = batch_size × devices × num_nodes); "
    "trainer.micro_batch caps the per-device forward (docs/reproduce.md)"
)


class TrainerSettings(Section):
    """How training runs: steps, the global batch and its split, precision and devices.

    The recipe's batch is global: ``global_batch`` samples per optimizer step whatever the number
    of devices; :func:`mango.train.batch.plan_batch` splits it into devices × nodes × micro-batch
    × gradient accumulation. ``max_steps``, the schedule and checkpoints count optimizer steps.
    """

    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    global_batch: int = Field(
        8, ge=1, description="samples per optimizer step, over all devices, nodes and accumulation"
    )
    micro_batch: int | None = Field(
        None,
        ge=1,
        description="largest per-device batch of one forward; None = global_batch / "
        "(devices × num_nodes), no accumulation",
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="per-device batch of evaluation; None = the micro-batch"
    )
    steps_per_checkpoint: int = Field(
        50, ge=1, description="checkpoint (and resume) interval in steps; also the logging 'epoch'"
    )
    val_every: int = Field(1, ge=1, description="validate every N checkpoints")
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)
    precision: Literal["32-true", "64-true", "bf16-mixed", "16-mixed"] = "32-true"
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    seed: int = 0
    compile: bool = False

    @property
    def eval_batch(self) -> int:
        """Per-device batch of evaluation: ``eval_batch_size``, else the largest forward that
        training allows (the per-device share of the global batch, capped by ``micro_batch``)."""
        if self.eval_batch_size:
            return self.eval_batch_size
        share = max(1, self.global_batch // (self.devices * self.num_nodes))
        return min(share, self.micro_batch or share)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_size" in data:
            raise ValueError(RENAMED_BATCH)
        return data


class RunConfig(Section):
    """A full run configuration; tasks subclass it with their own ``data`` and ``model`` sections."""

    task: str
    data: DataSection
    model: ModelSection
    flow: FlowSettings = Field(default_factory=FlowSettings)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=c`` into ``(["a", "b"], yaml_value_of_c)``."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. trainer.max_steps=100)")
    key, raw = item.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(
            f"--set {item!r}: value is not valid YAML ({error.__class__.__name__})"
        ) from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``key.path=value`` override applied."""
    result = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node = result
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def validate(config_class: type[RunConfig], raw: Mapping[str, Any], source: str) -> RunConfig:
    """Validate ``raw`` against ``config_class``; the first problem becomes a one-line ConfigError."""
    try:
        return config_class.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "<root>"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the task's config reference)"
        if first["type"] == "value_error" and str(first["ctx"]["error"]) == RENAMED_BATCH:
            raise ConfigError(f"{source}: {RENAMED_BATCH}") from None
        raise ConfigError(f"{source}: field {field}: {message}") from None


def upgrade_stored(raw: dict[str, Any]) -> dict[str, Any]:
    """A config stored by an earlier mango, in today's fields (a copy; ``raw`` is unchanged).

    Checkpoints written before the global batch store ``trainer.batch_size`` per device; it
    becomes ``global_batch = batch_size × devices × num_nodes`` with that micro-batch, the batch
    they were trained at.
    """
    trainer = raw.get("trainer")
    if not isinstance(trainer, dict) or "batch_size" not in trainer:
        return raw
    trainer = dict(trainer)
    per_device = trainer.pop("batch_size")
    world = int(trainer.get("devices", 1)) * int(trainer.get("num_nodes", 1))
    trainer.setdefault("global_batch", per_device * world)
    trainer.setdefault("micro_batch", per_device)
    return {**raw, "trainer": trainer}


def dump_yaml(config: RunConfig) -> str:
    """The config as YAML text (round-trips through :func:`validate`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
