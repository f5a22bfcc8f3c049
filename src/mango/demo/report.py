"""The report of ``mango demo`` (:mod:`mango.demo.run`): its sections, figures and sentences.

``write_demo_report`` reads the demo's trained runs back, draws the prediction grid, the
learning curves, the attention maps and the per-layer attention effect, and writes
``report.html`` beside ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mango.data.synthetic import rgb_alone_miou_bound
from mango.demo.spec import ATTENTION_OFF, DEMO_FILLS, FIGURE_LABELS, MISSING_DEPTH
from mango.flows import AttentionMap, InvertibleCrossAttention, MangoFlow, attention_disabled
from mango.models.missing import filling
from mango.train.run import load_trained, metrics_logs


def write_demo_report(
    out: Path,
    metrics: dict[str, dict[str, Any]],
    seconds: dict[str, float],
    health: dict[str, Any],
    quick: bool,
) -> Path:
    """Write ``out/report.html`` and its figures; ``metrics`` are the entries of
    ``metrics.json`` in report order, ``seconds`` the training time of each trained model (its
    run is ``out/runs/<name>``)."""
    from mango.report import (
        Section,
        read_lightning_csv,
        save_layer_effects,
        save_learning_curves,
        save_prediction_grid,
        write_report,
    )

    runs = out / "runs"
    models = {name: load_trained(runs / name / "checkpoints" / "last.ckpt") for name in seconds}
    task, cfg, fusion_model = models["fusion"]
    class_names = task.class_names(cfg)
    test = task.dataset(cfg, "test")
    shown = [test[i] for i in range(4)]
    rows = []
    with torch.no_grad():
        for sample in shown:
            batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
            predictions = {
                name: model(batch).logits.argmax(1)[0].numpy()
                for name, (_, _, model) in models.items()
            }
            with attention_disabled(fusion_model):
                predictions[ATTENTION_OFF] = fusion_model(batch).logits.argmax(1)[0].numpy()
            without_depth = {**batch, "present": {"depth": torch.tensor([False])}}
            for fill, entry in MISSING_DEPTH.items():
                with filling(fusion_model, fill):
                    logits = fusion_model(without_depth).logits
                predictions[entry] = logits.argmax(1)[0].numpy()
            predictions = {FIGURE_LABELS.get(name, name): predictions[name] for name in metrics}
            rows.append(
                {
                    "rgb": task.display_rgb(sample["rgb"]) / 255.0,
                    "depth": sample["depth"][0].numpy(),
                    "target": sample["mask"].numpy(),
                    "predictions": predictions,
                }
            )
    figures = out / "figures"
    grid_png = save_prediction_grid(figures / "predictions.png", rows, class_names)

    curves = {}
    for name in seconds:
        log = read_lightning_csv(metrics_logs(runs / name)[-1])
        curves[name] = {k: v for k, v in log.items() if k in ("train/task_loss", "val/miou")}
    curves_png = save_learning_curves(figures / "learning_curves.png", curves)

    attention_pngs, roundtrip = _attention_figures(fusion_model, shown[0], task, cfg, figures)
    flow_name, flow_health = next(iter(health.items()))
    effects_png = save_layer_effects(
        figures / "attention_effect.png",
        flow_health["layer_effects"],
        _layer_labels(fusion_model.get_submodule(flow_name)),
        "Attention effect per ICA layer of the trained flow (test scenes)",
    )

    table = [
        {
            "model": name,
            "test mIoU (%)": m["miou"],
            "pixel acc (%)": m["pixel_acc"],
            "mean acc (%)": m["mean_acc"],
            "attention effect": m.get("attention_effect", float("nan")),
            "bits/dim": m.get("bits_per_dim", float("nan")),
            "train time (s)": seconds.get(name, float("nan")),
        }
        for name, m in metrics.items()
    ]
    sections = [
        Section(
            "Result",
            "Five models with the same encoders, decoder, schedule and number of steps, evaluated on "
            f"{len(test)} held-out test scenes that played no part in training or model choice; "
            f"{ATTENTION_OFF} is the fusion checkpoint evaluated with every cross-modal attention "
            f"layer switched off (nothing retrained); transformer is a joint self-attention fusion "
            "with as many parameters as the flow (within 10 %). "
            f"{comparison(metrics)} (differences in mIoU points, one seed; the same comparison "
            "over three seeds with intervals is in the README). "
            "The scenes are built so that two object classes share a colour and differ only in depth "
            "shape (dome vs pit), and two share a shape and differ only in colour: a single modality "
            "cannot tell them apart. Each scene's depth map is also shifted against the RGB image by "
            f"up to {cfg.data.misregistration:.1%} of its side (a misregistered depth sensor), so "
            "concatenating the two modalities position by position pairs colour with the depth of "
            "the wrong place near every object edge."
            + (" (Quick run: fewer steps and smaller scenes.)" if quick else ""),
            table=table,
        ),
        _missing_section(metrics, _rgb_alone_bound(test)),
        Section(
            "Predictions on test scenes",
            "Columns: RGB input, depth input, ground truth, then each model's prediction; the "
            "last two are the fusion model given RGB alone (depth zero-filled, and imputed).",
            images=[(grid_png.relative_to(out).as_posix(), "Test scenes and predictions")],
        ),
        Section(
            "Learning curves",
            "Training task loss and validation mIoU (validation scenes, disjoint from the test scenes).",
            images=[(curves_png.relative_to(out).as_posix(), "Learning curves")],
        ),
        Section(
            "What drives the fusion: ICA attention",
            "In an MMCA layer the RGB tokens (X1) compute the attention that mixes the depth tokens (X2): "
            "for a chosen output token (outlined on the RGB image), the heatmap shows which depth tokens "
            "it gathers, chosen from RGB content. Shown is the softmax part P of the layer's matrix "
            "(A = I + β N with N = (P - P⁻)/2 for the signed form, A = (1 - α) I + α P for the gated "
            "one), with the learned strength in the title. Row i may only attend to tokens "
            "j > i (signed form; j >= i for the others, raster order), "
            f"which makes the layer triangular and exactly invertible. {roundtrip}",
            images=[
                (p.relative_to(out).as_posix(), p.stem.replace("_", " ")) for p in attention_pngs
            ],
        ),
        Section(
            "Attention health",
            "How much each ICA layer changes the tokens it transforms, ‖Y2 − X2‖ / ‖X2‖ over the "
            f"test scenes (mean {flow_health['attention_effect']:.3f}; 0 would be an idle layer), "
            "and the trained flow's float32 round trip ‖f⁻¹(f(x)) − x‖ / ‖x‖ on the same tokens: "
            f"{flow_health['round_trip_error']:.1e}.",
            images=[(effects_png.relative_to(out).as_posix(), "Attention effect per layer")],
        ),
    ]
    return write_report(out, "MANGO demo: flow fusion on synthetic RGB-D scenes", sections)


def _rgb_alone_bound(test: Any) -> float | None:
    """:func:`rgb_alone_miou_bound` of the test scenes; ``None`` if a class has no pixel there."""
    try:
        return rgb_alone_miou_bound(torch.stack([test[i]["mask"] for i in range(len(test))]))
    except ValueError:  # a tiny test set (the tests' demo)
        return None


def _missing_section(metrics: dict[str, dict[str, Any]], bound: float | None) -> Any:
    """The report's "depth absent" section: zero fill vs imputation vs the RGB-only model, and
    ``bound``, the most mIoU a prediction from RGB alone can expect on the test scenes."""
    from mango.report import Section

    zero, impute = (metrics[MISSING_DEPTH[fill]] for fill in DEMO_FILLS)
    full, rgb = metrics["fusion"]["miou"], metrics["rgb_only"]["miou"]
    half = zero["miou"] + (full - zero["miou"]) / 2
    return Section(
        "Depth absent: zero fill vs imputation by the flow",
        f"The fusion checkpoint evaluated on the same test scenes with no depth at all. Zero fill "
        f"(the depth input set to 0) scores {zero['miou']:.1f} mIoU. Imputation replaces the "
        "depth tokens at the flow-fused stage by the flow's most likely completion given the RGB "
        f"tokens (other stages keep the zero-filled depth) and scores {impute['miou']:.1f}: "
        f"{gap_closed(full, zero['miou'], impute['miou']):.0%} of the gap to the full fusion "
        f"model ({full:.1f}) closed, {impute['miou'] - rgb:+.1f} against the RGB-only model "
        f"({rgb:.1f}). It costs {impute.get('impute_ms_per_sample', float('nan')):.0f} ms per "
        "scene; the completed tokens are "
        f"{impute.get('impute_conditional_gain_bits', float('nan')):.2f} bits per imputed "
        "dimension more likely under the flow than the zero-filled ones."
        + (
            ""
            if bound is None
            else " Both fills see RGB alone, and given RGB a dome and a pit are a fair coin on "
            f"these scenes, so no prediction from RGB can expect more than {bound:.1f} mIoU here "
            "(mango.data.synthetic.rgb_alone_miou_bound): closing half the gap would need "
            f"{half:.1f}. Imputation shows its worth where the absent modality depends on the "
            "present one (docs/missing.md)."
        ),
    )


def _attention_figures(
    model: Any, sample: dict[str, Any], task: Any, cfg: Any, figures: Path
) -> tuple[list[Path], str]:
    """Attention maps of the first and last MMCA v1 layer of the trained flow, and its round trip."""
    from mango.report import save_attention_maps

    stage = cfg.model.fuse_stages[0]
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor)}
    flow = model.stages[stage].fusion.flow
    grid = model.stages[stage].grid
    with torch.no_grad():
        tokens = model.flow_tokens(batch, stage)
        z, _ = flow(tokens)
        back, _ = flow.inverse(z)
        maps = flow.attention_maps(tokens)
    error = float((back - tokens).norm() / tokens.norm())
    rgb = task.display_rgb(sample["rgb"]) / 255.0
    depth = sample["depth"][0].numpy()
    queries = _query_tokens(sample["mask"].numpy(), grid)
    paths = []
    for m in maps:
        if m.partition == "mmca" and m.variant == 1 and m.block in (0, len(flow) - 1):
            strength = _strength(flow, m)
            paths.append(
                save_attention_maps(
                    figures / f"attention_block{m.block + 1}_mmca1.png",
                    rgb,
                    depth,
                    m.probabilities[0].numpy(),
                    grid,
                    queries,
                    f"Block {m.block + 1}, MMCA v1: RGB tokens choose which depth tokens mix (strength {strength:+.2f})",
                )
            )
    note = (
        f"The trained flow maps these tokens to its latent and back with relative error {error:.1e} "
        "(float32)."
    )
    return paths, note


def _strength(flow: MangoFlow, attention_map: AttentionMap) -> float:
    """The learned strength (β, or the gate α) of the ICA layer behind ``attention_map``."""
    for layer in flow.layers[attention_map.block]:
        if (
            isinstance(layer, InvertibleCrossAttention)
            and layer.partition == attention_map.partition
            and layer.variant == attention_map.variant
        ):
            return float(layer.strength_value.detach())
    return float("nan")


def _layer_labels(flow: MangoFlow) -> list[str]:
    """``"b1 mmca1"``, ... for every ICA layer of ``flow``, in flow order."""
    return [
        f"b{b + 1} {layer.partition}{layer.variant}"
        for b, block in enumerate(flow.layers)
        for layer in block
        if isinstance(layer, InvertibleCrossAttention)
    ]


def _query_tokens(mask: np.ndarray, grid: tuple[int, int]) -> list[int]:
    """Up to three token indices that sit on objects (not background), early in raster order."""
    h, w = grid
    cells = (
        mask.reshape(h, mask.shape[0] // h, w, mask.shape[1] // w)
        .transpose(0, 2, 1, 3)
        .reshape(h * w, -1)
    )
    on_object = [i for i in range(h * w) if (cells[i] > 0).mean() > 0.5]
    chosen = on_object[: len(on_object) // 2 : max(1, len(on_object) // 6)][:3]
    return chosen or [0, (h * w) // 3, (h * w) // 2]


def gap_closed(full: float, zero: float, impute: float) -> float:
    """Share of the zero-fill gap that imputation closes, ``(impute − zero) / (full − zero)``.

    Example:
        >>> gap_closed(full=90.0, zero=50.0, impute=80.0)
        0.75
    """
    return (impute - zero) / (full - zero) if full != zero else float("nan")


def comparison(metrics: dict[str, dict[str, Any]]) -> str:
    """One sentence: every entry's test mIoU and the differences the demo is about."""
    miou = {name: m["miou"] for name, m in metrics.items()}
    best_single = max(miou["rgb_only"], miou["depth_only"])
    listed = ", ".join(f"{name} {value:.1f}" for name, value in miou.items())
    zero, impute = (miou[MISSING_DEPTH[fill]] for fill in DEMO_FILLS)
    return (
        f"test mIoU: {listed}. Fusion vs concat {miou['fusion'] - miou['concat']:+.1f}, "
        f"vs the matched transformer {miou['fusion'] - miou['transformer']:+.1f} (one seed), "
        f"switching its attention off costs {miou['fusion'] - miou[ATTENTION_OFF]:.1f}, "
        f"fusion vs the better single modality {miou['fusion'] - best_single:+.1f}; without "
        f"depth, imputation closes {gap_closed(miou['fusion'], zero, impute):.0%} of the "
        f"zero-fill gap and is {impute - miou['rgb_only']:+.1f} against the RGB-only model"
    )
