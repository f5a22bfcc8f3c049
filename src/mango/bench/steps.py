"""Rows 7 and 8 of ``mango bench``: where a small flow's training step stands against its arithmetic.

Row 7 compares a small flow's training step with its **arithmetic bound**: the step's FLOPs
(counted by ``torch.utils.flop_counter`` on the plain path, since ``FlopCounterMode`` cannot follow
the one-pass detached-NLL backward) divided by this machine's matmul throughput, measured in the
same interleaved rounds with one large ``torch.mm``. Beside it stand two floors of the same
step: its no-grad forward alone, and its matrix products alone, replayed back to back at their
shapes with nothing between them (:func:`matmul_replay`). Row 8 times one optimizer step of a
task's fusion model against the same model with concatenation fusion, with the fusion model's
no-grad forward beside it; :func:`fusion_task_row` takes any task config, so other tasks' models
(the ``tensors`` smoke model, row 9) get their own row. Rows 10 and 11 repeat rows 8 and 9
against a real peer: the joint Transformer fusion with as many parameters as the flow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from mango.bench.measure import CONFIGS, paired_median_ms, row
from mango.flows import MangoFlow

#: Row 7's flow: the size most users start with (4 blocks, 16 + 16 tokens, D = 32, batch 64).
SMALL_FLOW = {"blocks": 4, "tokens": (16, 16), "dim": 32, "batch": 64}


def flow_step(flow: MangoFlow, x: Tensor, detached: bool) -> Callable[[], None]:
    """Forward + backward of a flow with a task term on ``z`` and the NLL (bits/dim)."""

    def step() -> None:
        if detached:  # the training default: the NLL's gradient stops at the tokens
            z, z_density, logdet = flow.forward_detached_density(x)
        else:
            z, logdet = flow(x)
            z_density = z
        bits = flow.to_bits_per_dim(flow.latent_log_prob(z_density, logdet))
        (z.square().mean() + bits.mean()).backward()

    return step


#: The matrix-product operators :func:`matmul_replay` records, and their number of tensor inputs.
_PRODUCTS = {"aten::mm": 2, "aten::bmm": 2, "aten::addmm": 3, "aten::baddbmm": 3}


def matmul_replay(step: Callable[[], None], device: str = "cpu") -> Callable[[], None]:
    """A function that runs every matrix product of one call of ``step``, at its shapes.

    ``step`` runs once under ``torch.profiler`` with shapes recorded; the replay calls the same
    ``torch.mm`` / ``bmm`` / ``addmm`` / ``baddbmm`` the same number of times on random inputs,
    with no autograd, Python or other kernels between them: the least time those products take.

    Example:
        >>> a, b = torch.randn(3, 4), torch.randn(4, 5)
        >>> replay = matmul_replay(lambda: (a @ b).sum())
        >>> replay()  # one 3 x 4 @ 4 x 5 product
    """
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        step()
    calls: dict[tuple[str, tuple[tuple[int, ...], ...]], int] = {}
    for event in prof.events():
        if event.name in _PRODUCTS and event.input_shapes:
            shapes = event.input_shapes[: _PRODUCTS[event.name]]
            key = (event.name, tuple(tuple(s) for s in shapes))
            calls[key] = calls.get(key, 0) + 1
    products = [
        (getattr(torch, name.split("::")[1]), [torch.randn(s, device=device) for s in shapes], n)
        for (name, shapes), n in calls.items()
    ]

    def replay() -> None:
        for fn, inputs, n in products:
            for _ in range(n):
                fn(*inputs)

    return replay


def arithmetic_bound_row(
    repeats: int, batch: int, mm_size: int = 2048, device: str = "cpu"
) -> dict[str, Any]:
    """Row 7: the small flow's training step (detached NLL) vs FLOPs / matmul throughput."""
    torch.manual_seed(0)
    flow = MangoFlow(SMALL_FLOW["dim"], SMALL_FLOW["tokens"], blocks=SMALL_FLOW["blocks"])
    flow = flow.to(device).train()
    x = torch.randn(batch, sum(SMALL_FLOW["tokens"]), SMALL_FLOW["dim"], device=device)
    with torch.no_grad():
        flow(x)  # ActNorm initialisation
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        flow_step(flow, x, detached=False)()
    flops = counter.get_total_flops()
    a, b = (torch.randn(mm_size, mm_size, device=device) for _ in range(2))
    step = flow_step(flow, x, detached=True)

    def forward() -> None:
        with torch.no_grad():
            flow(x)

    times = paired_median_ms(
        {
            "step": step,
            "plain": flow_step(flow, x, detached=False),
            "mm": lambda: torch.mm(a, b),
            "forward": forward,
            "matmuls": matmul_replay(step, device),
        },
        repeats,
        warmup=2,
        device=device,
    )
    throughput = 2 * mm_size**3 / (times["mm"] * 1e-3)  # FLOP/s
    bound_ms = flops / throughput * 1e3
    blocks, (l1, l2), dim = SMALL_FLOW["blocks"], SMALL_FLOW["tokens"], SMALL_FLOW["dim"]
    return row(
        "7. small flow training step (detached NLL) vs its arithmetic bound",
        times["step"],
        bound_ms,
        "<= 3x slower",
        shape=f"{blocks} blocks, {l1}+{l2} tokens, D={dim}, batch {batch}",
        gflop_counted=flops / 1e9,
        matmul_gflops=throughput / 1e9,
        step_without_detached_nll_ms=times["plain"],
        forward_no_grad_ms=times["forward"],
        matmuls_alone_ms=times["matmuls"],
    )


def _task_step(
    config: dict[str, Any], overrides: Sequence[str], batch: int, device: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One optimizer step of ``task.build_model(cfg)`` on one batch (task loss + λ · bits/dim),
    and the model's no-grad forward on the same batch."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from mango.train.data import eval_loader
    from mango.train.module import build_optimizer
    from mango.train.run import build_config

    task, cfg = build_config(config, "bench", [*overrides, f"trainer.global_batch={batch}"])
    torch.manual_seed(0)
    model = task.build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg)  # as in training: fused AdamW, three groups
    inputs = move_data_to_device(next(iter(eval_loader(task, cfg, "val"))), device)

    def step() -> None:
        outputs = model(inputs)
        loss = task.loss(outputs, inputs)
        bits = getattr(outputs, "bits_per_dim", None)
        if bits is not None and cfg.loss.nll_weight > 0:
            loss = loss + cfg.loss.nll_weight * bits.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(inputs)

    return step, forward


def fusion_task_row(
    name: str,
    config: dict[str, Any],
    mango: Sequence[str],
    baseline: Sequence[str],
    goal: str,
    repeats: int,
    batch: int,
    shape: str,
    device: str = "cpu",
) -> dict[str, Any]:
    """A row: one training step of ``config``'s model with ``mango`` vs ``baseline`` overrides,
    and the MANGO model's no-grad forward beside it (a floor of its step)."""
    step, forward = _task_step(config, mango, batch, device)
    times = paired_median_ms(
        {
            "mango": step,
            "baseline": _task_step(config, baseline, batch, device)[0],
            "forward": forward,
        },
        repeats,
        warmup=2,
        device=device,
    )
    return row(
        name,
        times["mango"],
        times["baseline"],
        goal,
        shape=shape,
        forward_no_grad_ms=times["forward"],
    )


#: the baseline of each step row: its name in the title, and the demo's and tensors rows' numbers
BASELINES = {"concat": ("concatenation", 8, 9), "transformer": ("the matched transformer", 10, 11)}


def demo_row(
    repeats: int, quick: bool, device: str = "cpu", baseline: str = "concat"
) -> dict[str, Any]:
    """Row 8 (10): the demo's fusion model (``mango demo``) vs its concatenation model (its
    joint Transformer fusion, sized to the flow's parameters)."""
    from mango.demo.spec import DEMO_CONFIG, MODELS, QUICK_OVERRIDES

    label, number, _ = BASELINES[baseline]
    extra = list(QUICK_OVERRIDES) if quick else []
    batch = DEMO_CONFIG["trainer"]["global_batch"]
    size = 48 if quick else DEMO_CONFIG["data"]["size"]
    flow = DEMO_CONFIG["flow"]
    return fusion_task_row(
        f"{number}. fusion training step, MANGO vs {label}: the demo's model",
        DEMO_CONFIG,
        [*MODELS["fusion"], *extra],
        [*MODELS[baseline], *extra],
        "<= 1.5x slower",
        repeats,
        batch,
        shape=f"{DEMO_CONFIG['model']['encoder']}, {size}x{size}, batch {batch}, "
        f"{flow['blocks']} flow blocks at stage {DEMO_CONFIG['model']['fuse_stages']}, "
        f"D={DEMO_CONFIG['model']['dim']}",
        device=device,
    )


def tensors_row(repeats: int, device: str = "cpu", baseline: str = "concat") -> dict[str, Any]:
    """Row 9 (11): the ``tensors`` smoke model (``configs/tensors-smoke.yaml``) vs its
    concatenation model (its matched transformer), on the generated fixture (written to a
    temporary folder)."""
    import tempfile

    from mango.config import read_yaml
    from mango.testing.tensors import write_tensors_fixture

    label, _, number = BASELINES[baseline]
    config = read_yaml(CONFIGS / "tensors-smoke.yaml")
    batch = config["trainer"]["global_batch"]
    with tempfile.TemporaryDirectory() as folder:
        root = write_tensors_fixture(folder, sizes=(2 * batch, batch, batch))
        config = {**config, "data": {**config.get("data", {}), "root": str(root)}}
        return fusion_task_row(
            f"{number}. fusion training step, MANGO vs {label}: the tensors smoke model",
            config,
            ["model.fusion=mango"],
            [f"model.fusion={baseline}"],
            "<= 3x slower" if baseline == "concat" else "<= 1.5x slower",
            repeats,
            batch,
            shape=f"a (6 tokens x 5) + b (12 -> 4 tokens), batch {batch}, "
            f"{config['flow']['blocks']} flow blocks, D={config['model']['dim']}",
            device=device,
        )
