"""``mango bench``: speed and memory of MANGO against baselines measured side by side.

Every row is a ratio of two measurements taken in the same process on the same machine (median
of repeated timings after a warm-up), so it survives noisy machines better than absolute times.
Memory is the **activation memory saved for backward** (bytes of tensors autograd keeps, counted
with ``torch.autograd.graph.saved_tensors_hooks``). ``device="cuda"`` runs every row on the GPU
(timings synchronize the device) and adds the peak allocated memory of the recipes' training
steps (:mod:`mango.bench.cuda`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mango.bench.cuda import cuda_tables
from mango.bench.measure import CONFIGS, median_ms, paired_median_ms, row, saved_bytes
from mango.bench.reference import reference_forward, reference_inverse
from mango.bench.report import print_result
from mango.bench.steps import arithmetic_bound_row, demo_row, tensors_row
from mango.errors import MangoError
from mango.flows import InvertibleCrossAttention, MangoFlow
from mango.io import atomic_write_json

#: the values of ``mango bench --device``
DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if ``mango bench`` can run there, else a one-line error naming ``--device``."""
    if device not in DEVICES:
        raise MangoError(f"--device: unknown device {device!r}; choose {' or '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MangoError(
            "--device cuda: no CUDA GPU on this machine (torch.cuda.is_available() is False)"
        )
    return device


def _ica(length: int, dim: int, device: str, **kwargs: Any) -> InvertibleCrossAttention:
    torch.manual_seed(0)
    layer = InvertibleCrossAttention(dim, (length, length), "mmca", 1, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer.to(device).eval()


@torch.no_grad()
def ica_rows(
    batch: int, length: int, dim: int, repeats: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Rows 1-3: exact ICA vs the official dense formulation and vs one SDPA call."""
    layer = _ica(length, dim, device)
    x = torch.randn(batch, 2 * length, dim, device=device)
    q = torch.randn(batch, 1, length, dim, device=device)
    forward = paired_median_ms(
        {
            "ours": lambda: layer(x),
            "reference": lambda: reference_forward(layer, x),
            "sdpa": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
        },
        repeats,
        warmup=2,
        device=device,
    )
    ours_fwd, ref_fwd, sdpa = forward["ours"], forward["reference"], forward["sdpa"]
    y, _ = layer(x)
    ours_inv = median_ms(lambda: layer.inverse(y), repeats, device=device)
    ref_inv = median_ms(
        lambda: reference_inverse(layer, reference_forward(layer, x)[0]), 1, 0, device
    )
    err_ours = float((layer.inverse(y)[0] - x).norm() / x.norm())
    y_ref = reference_forward(layer, x)[0]
    err_ref = float((reference_inverse(layer, y_ref) - x).norm() / x.norm())
    shape = f"B={batch}, L={length} per modality, D={dim}"
    return [
        row(
            "1. ICA forward + log-det vs official dense (masked softmax, slogdet)",
            ours_fwd,
            ref_fwd,
            ">= 10x faster",
            shape=shape,
        ),
        row(
            "2. ICA inverse vs official pinv inverse",
            ours_inv,
            ref_inv,
            ">= 30x faster",
            shape=shape,
            roundtrip_error_mango=err_ours,
            roundtrip_error_official=err_ref,
        ),
        row(
            "3. ICA forward vs one scaled_dot_product_attention call",
            ours_fwd,
            sdpa,
            "<= 1.5x slower",
            shape=shape,
        ),
    ]


def flow_memory_row(batch: int, length: int, dim: int, device: str = "cpu") -> dict[str, Any]:
    """Row 4: training-step activation memory of a 12-block flow vs a 1-block flow."""
    results = {}
    for blocks in (1, 12):
        torch.manual_seed(0)
        flow = MangoFlow(dim, (length, length), blocks=blocks, memory_saving=True)
        flow = flow.to(device).train()
        x = torch.randn(batch, 2 * length, dim, device=device)
        with torch.no_grad():
            flow(x)  # ActNorm initialisation
        results[blocks] = saved_bytes(
            lambda flow=flow, x=x: flow.bits_per_dim(x.requires_grad_()).mean()
        )
    standard = MangoFlow(dim, (length, length), blocks=12, memory_saving=False)
    standard = standard.to(device).train()
    x = torch.randn(batch, 2 * length, dim, device=device)
    with torch.no_grad():
        standard(x)
    results["12_standard"] = saved_bytes(lambda: standard.bits_per_dim(x.requires_grad_()).mean())
    return row(
        "4. activation memory kept for backward, 12 blocks vs 1 block (memory_saving)",
        results[12] / 2**20,
        results[1] / 2**20,
        "<= 2x",
        unit="MiB",
        twelve_blocks_without_memory_saving_mib=results["12_standard"] / 2**20,
        shape=f"B={batch}, L={length}+{length}, D={dim}",
    )


#: The row-5 model: the ``configs/nyudv2.yaml`` recipe (encoder, flow, widths) at batch 2.
RECIPE = {
    "encoder": "mit-b3",
    "fuse_stages": [2, 3],
    "dim": 64,
    "head_dim": 768,
    "flow": {"blocks": 12, "coupling_hidden": 128},
}


def _fusion_step(
    fusion: str, size: int, batch: int, device: str, **settings: Any
) -> Callable[[], None]:
    """One AdamW training step (cross-entropy + flow bits/dim) of a segmentation model."""
    from mango.models.segmentation import SegmentationFusionModel

    torch.manual_seed(0)
    model = SegmentationFusionModel(
        ["rgb", "depth"], {"rgb": 3, "depth": 1}, 40, (size, size), fusion=fusion, **settings
    ).to(device)
    optimizer = torch.optim.AdamW(model.train().parameters(), lr=1e-5)
    inputs = {
        "rgb": torch.randn(batch, 3, size, size, device=device),
        "depth": torch.randn(batch, 1, size, size, device=device),
    }
    target = torch.randint(0, 40, (batch, size, size), device=device)

    def step() -> None:
        out = model(inputs)
        loss = F.cross_entropy(out.logits, target)
        if out.bits_per_dim is not None:
            loss = loss + out.bits_per_dim.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def fusion_step_row(
    repeats: int, size: int, batch: int, encoder: str, device: str = "cpu"
) -> dict[str, Any]:
    """Row 5: one training step of MANGO fusion vs concatenation fusion, same encoders and head.

    The model is the NYUDv2 recipe (:data:`RECIPE`) with ``encoder``, without memory saving
    (a memory/time trade, measured in row 4 and ``docs/performance.md``). Notes time cheaper
    settings on the lightest encoder, MiT-B0, to show where the cost comes from.
    """
    settings = {**RECIPE, "encoder": encoder}
    light = {**RECIPE, "encoder": "mit-b0", "head_dim": 256}
    stage3 = {**light, "fuse_stages": [3]}
    nll_into_encoders = {**light, "flow": {**RECIPE["flow"], "detach_nll": False}}
    # Two groups, each timed in interleaved rounds; a group's models are freed before the next.
    times = paired_median_ms(
        {
            "mango": _fusion_step("mango", size, batch, device, **settings),
            "concat": _fusion_step("concat", size, batch, device, **settings),
        },
        repeats,
        device=device,
    )
    times |= paired_median_ms(
        {
            "mango_b0": _fusion_step("mango", size, batch, device, **light),
            "concat_b0": _fusion_step("concat", size, batch, device, **light),
            "mango_b0_stage3": _fusion_step("mango", size, batch, device, **stage3),
            "mango_b0_nll_into_encoders": _fusion_step(
                "mango", size, batch, device, **nll_into_encoders
            ),
        },
        repeats,
        device=device,
    )
    return row(
        "5. fusion training step, MANGO (12 blocks) vs concatenation, same encoders",
        times["mango"],
        times["concat"],
        "<= 1.5x slower",
        shape=f"{encoder}, {size}x{size}, batch {batch}, flow at stages 2 and 3, "
        f"otherwise the nyudv2 recipe (encoder {RECIPE['encoder']})",
        ratio_mit_b0=times["mango_b0"] / times["concat_b0"],
        ratio_mit_b0_flow_at_stage_3_only=times["mango_b0_stage3"] / times["concat_b0"],
        ratio_mit_b0_nll_into_encoders=times["mango_b0_nll_into_encoders"] / times["concat_b0"],
    )


def compile_row(
    repeats: int, blocks: int, length: int, batch: int, device: str = "cpu"
) -> dict[str, Any]:
    """Row 6 (``--compile``): a flow training step under ``torch.compile`` vs eager.

    The ratio is compiled / eager step time after compilation; ``compile_s`` is the time of the
    first compiled step (tracing + code generation), which a run pays once per process.
    """
    torch.manual_seed(0)
    flow = MangoFlow(64, (length, length), blocks=blocks, coupling_hidden=128).to(device).train()
    x = torch.randn(batch, 2 * length, 64, device=device, requires_grad=True)
    flow(x)  # ActNorm initialisation outside the compiled graph

    def step(f: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Callable[[], None]:
        def run_once() -> None:
            z, logdet = f(x)
            (0.5 * z.square().mean() - logdet.mean()).backward()

        return run_once

    compiled = torch.compile(flow)
    start = time.perf_counter()
    step(compiled)()
    compile_s = time.perf_counter() - start
    times = paired_median_ms(
        {"compiled": step(compiled), "eager": step(flow)}, repeats, device=device
    )
    return row(
        "6. flow training step, torch.compile vs eager",
        times["compiled"],
        times["eager"],
        "measured (off by default)",
        shape=f"{blocks} blocks, B={batch}, L={length}+{length}, D=64",
        compile_s=compile_s,
    )


@torch.no_grad()
def scaling_table(
    batch: int, dim: int, lengths: list[int], repeats: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """ICA forward time and activation memory as the token count grows."""
    table = []
    for length in lengths:
        layer = _ica(length, dim, device)
        x = torch.randn(batch, 2 * length, dim, device=device)
        forward = median_ms(lambda layer=layer, x=x: layer(x), repeats, device=device)
        inverse = median_ms(
            lambda layer=layer, x=x: layer.inverse(layer(x)[0]), max(1, repeats // 2), 1, device
        )
        inverse -= forward
        with torch.enable_grad():
            memory = saved_bytes(lambda layer=layer, x=x: layer(x.requires_grad_())[0].sum())
            memory /= 2**20
        table.append(
            {
                "tokens_per_modality": length,
                "forward_ms": forward,
                "inverse_ms": inverse,
                "activation_mib": memory,
            }
        )
    return table


def run(
    out: str | Path | None = None, quick: bool = False, compile: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Run every row on ``device``, print the tables, optionally write JSON; ``compile`` adds
    row 6, ``device="cuda"`` the ``cuda`` tables (:func:`mango.bench.cuda.cuda_tables`)."""
    check_device(device)
    if not CONFIGS.is_dir():
        raise MangoError(f"mango bench: {CONFIGS} not found; run it from a source checkout")
    repeats = 3 if quick else 5
    batch, length = (4, 512) if quick else (16, 1024)
    rows = ica_rows(batch, length, 64, repeats, device)
    rows.append(flow_memory_row(4, 64 if quick else 128, 64, device))
    encoder = "mit-b0" if quick else "mit-b3"
    rows.append(fusion_step_row(repeats, 128 if quick else 256, 2, encoder, device))
    if compile:
        rows.append(compile_row(repeats, 2 if quick else 4, 64 if quick else 256, 2, device))
    mm_size = 1024 if quick else 2048
    rows.append(arithmetic_bound_row(repeats, 16 if quick else 64, mm_size, device))
    rows.append(demo_row(repeats, quick, device))
    rows.append(tensors_row(repeats, device))
    rows.append(demo_row(repeats, quick, device, baseline="transformer"))
    rows.append(tensors_row(repeats, device, baseline="transformer"))
    if quick:  # the goals are set for the full shapes: no verdicts on the small ones
        for r in rows:
            r["met"] = None
    lengths = [256, 512, 1024] if quick else [256, 512, 1024, 2048, 4096]
    scaling = scaling_table(2 if quick else 4, 64, lengths, repeats, device)
    cuda = torch.device(device).type == "cuda"
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        },
        "rows": rows,
        "scaling": scaling,
    }
    if cuda:
        result["cuda"] = cuda_tables(repeats, device)
    print_result(result)
    if out is not None:
        atomic_write_json(out, result)
    return result
