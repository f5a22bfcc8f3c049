"""The tables ``mango bench --device cuda`` adds: peak memory and time of the recipes' steps.

- ``nyudv2_step``: one optimizer step (built as in training) of the ``configs/nyudv2.yaml`` model at its crop size
  and batch, with its precision (bf16 autocast for encoders and head; the flow stays float32),
  with and without ``flow.memory_saving``: median time and ``torch.cuda.max_memory_allocated``
  (weights, optimizer state and activations).
- ``recipe_flows``: the flow training step (forward and backward, the NLL detached as the config
  says) of every flow of each recipe (``configs/*.yaml`` but the smoke configs) at its real size:
  the recipe's token layout, width, blocks, memory saving and batch.

Off CUDA the same functions run (so the CPU tests can check them) with ``peak_mib`` ``None``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mango.bench.measure import CONFIGS, median_ms
from mango.bench.steps import flow_step
from mango.errors import CheckpointError
from mango.flows import MangoFlow


def recipe_configs() -> list[Path]:
    """The paper recipes: every ``configs/*.yaml`` but the ``-smoke`` ones and the demo's
    (a CPU config, ``demo.yaml``)."""
    return sorted(
        p for p in CONFIGS.glob("*.yaml") if not p.stem.endswith("-smoke") and p.stem != "demo"
    )


def measure(make_step: Callable[[], Callable[[], None]], repeats: int, device: str) -> dict:
    """``step_ms`` (median) and ``peak_mib`` (CUDA only) of the step ``make_step()`` builds.

    The peak counts from before the model is built, so it includes weights and optimizer state.
    """
    cuda = torch.device(device).type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = make_step()
    step_ms = median_ms(step, repeats, device=device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return {"step_ms": step_ms, "peak_mib": peak}


def _segmentation_step(
    config: Path, overrides: Sequence[str], device: str
) -> Callable[[], Callable[[], None]]:
    """A builder of one optimizer step of a segmentation config's model on a random batch."""
    from mango.train.module import build_optimizer
    from mango.train.run import load_config

    def make() -> Callable[[], None]:
        task, cfg = load_config(config, overrides)
        torch.manual_seed(0)
        model = task.build_model(cfg).to(device).train()
        optimizer = build_optimizer(model, cfg)  # as in training
        batch, (height, width) = cfg.trainer.global_batch, cfg.data.crop_size
        channels = {"rgb": 3, "depth": 1}
        inputs = {
            m: torch.randn(batch, channels[m], height, width, device=device)
            for m in cfg.model.modalities
        }
        classes = len(task.class_names(cfg))
        inputs["mask"] = torch.randint(0, classes, (batch, height, width), device=device)
        bf16 = cfg.trainer.precision == "bf16-mixed"
        device_type = torch.device(device).type

        def step() -> None:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                out = model(inputs)
                loss = task.loss(out, inputs)
            if out.bits_per_dim is not None:
                loss = loss + cfg.loss.nll_weight * out.bits_per_dim.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return step

    return make


def nyudv2_step(
    repeats: int, device: str, config: Path = CONFIGS / "nyudv2.yaml", overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The segmentation training step of ``config`` with and without memory saving."""
    from mango.train.run import load_config

    _, cfg = load_config(config, overrides)
    result: dict[str, Any] = {
        "config": config.name,
        "shape": f"{cfg.model.encoder}, {cfg.data.crop_size[0]}x{cfg.data.crop_size[1]}, "
        f"batch {cfg.trainer.global_batch}, {cfg.flow.blocks} flow blocks at stages "
        f"{cfg.model.fuse_stages}, precision {cfg.trainer.precision}",
    }
    for name, saving in (("memory_saving", True), ("standard", False)):
        setting = [*overrides, f"flow.memory_saving={str(saving).lower()}"]
        result[name] = measure(_segmentation_step(config, setting, device), repeats, device)
    return result


def _flows(config: Path) -> tuple[Any, list[tuple[str, MangoFlow]]]:
    """``(cfg, [(module name, flow), ...])`` of the model ``config`` builds."""
    from mango.train.run import load_config

    task, cfg = load_config(config)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    return cfg, [(n, m) for n, m in model.named_modules() if isinstance(m, MangoFlow)]


def _flow_step_builder(
    flow: MangoFlow, batch: int, detached: bool, device: str
) -> Callable[[], Callable[[], None]]:
    """A builder of ``flow``'s training step on a random batch (see :func:`mango.bench.steps.flow_step`)."""

    def make() -> Callable[[], None]:
        moved = flow.to(device).train()
        x = torch.randn(batch, moved.length, moved.dim, device=device)
        with torch.no_grad():
            moved(x)  # ActNorm initialisation
        return flow_step(moved, x.requires_grad_(), detached=detached)

    return make


def recipe_flows(
    repeats: int, device: str, configs: Sequence[Path] | None = None
) -> list[dict[str, Any]]:
    """One entry per flow of each config (default :func:`recipe_configs`): its training step.

    A config whose model cannot be built here (its offline encoder weights are not installed, as
    on a machine without a network) gets one entry ``{"config", "skipped": reason}``.
    """
    table: list[dict[str, Any]] = []
    for config in recipe_configs() if configs is None else configs:
        try:
            cfg, flows = _flows(config)
        except CheckpointError as exc:
            table.append({"config": config.name, "skipped": str(exc)})
            continue
        for name, flow in flows:
            entry = {
                "config": config.name,
                "flow": name,
                "tokens": list(flow.tokens),
                "dim": flow.dim,
                "blocks": cfg.flow.blocks,
                "batch": cfg.trainer.global_batch,
                "memory_saving": flow.memory_saving,
            }
            make = _flow_step_builder(flow, cfg.trainer.global_batch, cfg.flow.detach_nll, device)
            table.append({**entry, **measure(make, repeats, device)})
            flow.cpu()
    return table


def cuda_tables(repeats: int, device: str) -> dict[str, Any]:
    """Both tables (see the module docstring)."""
    return {
        "nyudv2_step": nyudv2_step(repeats, device),
        "recipe_flows": recipe_flows(repeats, device),
    }
