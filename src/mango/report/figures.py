"""Report figures: predictions next to their inputs, learning curves, ICA attention maps.

Figures are drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas (no pyplot, no
global backend switch, nothing left open) and written atomically as PNG: a failure while saving
leaves any existing file untouched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mango.io import atomic_save

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
#: side of one image panel in inches (``PANEL * DPI`` pixels)
PANEL = 2.0
_TITLE_HEIGHT = 0.35  # inches above the first row of the prediction grid (column titles)
_LABEL_HEIGHT = 0.25  # inches below each row (per-prediction accuracy)
_LEGEND_ROW = 0.28  # inches per legend row
_LEGEND_COLUMNS = 6
#: colour of pixels whose label is outside the class range (e.g. 255 = ignore)
IGNORE_COLOUR = (1.0, 1.0, 1.0)


def class_colours(num_classes: int) -> np.ndarray:
    """A fixed ``(num_classes, 3)`` float palette.

    Class 0 is dark grey (background). Classes 1-4 follow the built-in synthetic scenes (see
    :mod:`mango.data.synthetic`): light orange, dark red, light cyan, dark blue = warm dome, warm
    pit, cool dome, cool pit (hue = colour family, light = near, dark = far). Then tab10, tab20b
    and, for any further classes, evenly spread hues (golden-ratio steps).
    """
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    base = [
        (0.25, 0.25, 0.25),
        (1.0, 0.68, 0.28),
        (0.62, 0.1, 0.08),
        (0.5, 0.86, 0.96),
        (0.1, 0.22, 0.62),
    ]
    base += [colormaps["tab10"](i)[:3] for i in (2, 4, 6, 8, 5, 9)]  # green purple pink olive ...
    base += [colormaps["tab20b"](i)[:3] for i in range(20)]
    extra = [
        tuple(hsv_to_rgb(((0.61803398875 * i) % 1.0, 0.65, 0.85)))
        for i in range(max(0, num_classes - len(base)))
    ]
    return np.asarray((base + extra)[:num_classes], dtype=np.float64)


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) float RGB with :func:`class_colours`; out-of-range
    labels (such as 255 = ignore) are white."""
    labels = np.asarray(labels)
    table = np.vstack([class_colours(num_classes), IGNORE_COLOUR])
    index = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return table[index.astype(np.int64)]


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    atomic_save(path, lambda f: figure.savefig(f, format="png", dpi=DPI))
    return path


def _show(ax: Any, image: np.ndarray, **kwargs: Any) -> None:
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def _normalise(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float64)
    low, high = float(np.nanmin(depth)), float(np.nanmax(depth))
    return (depth - low) / max(high - low, 1e-12)


def save_prediction_grid(
    path: str | os.PathLike[str], rows: list[dict[str, Any]], class_names: Sequence[str]
) -> Path:
    """One row per sample: RGB | Depth | Target | one column per prediction, then a class legend.

    Each row is a dict with ``rgb`` (H, W, 3) float in [0, 1], ``depth`` (H, W) float (shown
    min-max normalised, near bright), ``target`` (H, W) int and ``predictions``: name -> (H, W) int.
    All rows must have the same prediction names (their order sets the columns). Labels index
    ``class_names`` through the fixed palette :func:`class_colours`; labels outside it (255 =
    ignore) are white and do not count in the pixel accuracy printed under each prediction.

    Size: ``(3 + P) * PANEL`` by ``n * (PANEL + 0.25) + 0.35 + 0.28 * legend rows`` inches at
    :data:`DPI` (legend rows = ceil(classes / 6)).
    """
    if not rows:
        raise ValueError("save_prediction_grid: no rows to draw")
    names = list(rows[0]["predictions"])
    for i, row in enumerate(rows):
        if list(row["predictions"]) != names:
            raise ValueError(
                f"save_prediction_grid: row {i} has predictions "
                f"{list(row['predictions'])}, row 0 has {names}"
            )
    num_classes = len(class_names)
    columns = ["RGB", "Depth", "Target", *names]
    legend_rows = math.ceil(num_classes / _LEGEND_COLUMNS)
    width = len(columns) * PANEL
    height = len(rows) * (PANEL + _LABEL_HEIGHT) + _TITLE_HEIGHT + legend_rows * _LEGEND_ROW + 0.1
    figure = _new_figure(width, height)
    grid = figure.add_gridspec(
        len(rows),
        len(columns),
        left=0.02 / len(columns),
        right=1 - 0.02 / len(columns),
        top=1 - _TITLE_HEIGHT / height,
        bottom=(legend_rows * _LEGEND_ROW + 0.1) / height,
        wspace=0.06,
        hspace=_LABEL_HEIGHT / PANEL,
    )
    for r, row in enumerate(rows):
        target = np.asarray(row["target"])
        valid = (target >= 0) & (target < num_classes)
        panels = [
            (np.clip(np.asarray(row["rgb"], dtype=np.float64), 0, 1), {}),
            (_normalise(row["depth"]), {"cmap": "magma_r"}),
            (colorize(target, num_classes), {}),
        ] + [(colorize(np.asarray(row["predictions"][n]), num_classes), {}) for n in names]
        for c, (image, kwargs) in enumerate(panels):
            ax = figure.add_subplot(grid[r, c])
            _show(ax, image, **kwargs)
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
            if c >= 3:
                prediction = np.asarray(row["predictions"][names[c - 3]])
                accuracy = 100 * float((prediction == target)[valid].mean()) if valid.any() else 0.0
                ax.set_xlabel(f"pixel acc {accuracy:.1f}%", fontsize=8, labelpad=2)
    from matplotlib.patches import Patch

    colours = class_colours(num_classes)
    figure.legend(
        handles=[
            Patch(facecolor=colours[k], edgecolor="black", linewidth=0.5, label=name)
            for k, name in enumerate(class_names)
        ],
        loc="lower center",
        ncol=min(_LEGEND_COLUMNS, num_classes),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
        handlelength=1.2,
        columnspacing=1.2,
    )
    return _save(figure, path)


def save_learning_curves(
    path: str | os.PathLike[str], curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]
) -> Path:
    """One subplot per metric (first-seen order), one line per model, steps on the x axis.

    ``curves`` maps model name -> metric name -> ``[(step, value), ...]`` (as returned by
    :func:`mango.report.read_lightning_csv`). A model keeps its colour in every subplot.
    """
    metrics = list(dict.fromkeys(m for per_model in curves.values() for m in per_model))
    columns = max(1, min(3, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    figure = _new_figure(4.6 * columns, 3.4 * rows)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for k, metric in enumerate(metrics):
        ax = figure.add_subplot(rows, columns, k + 1)
        for m, (model, per_model) in enumerate(curves.items()):
            points = per_model.get(metric, [])
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            ax.plot(
                steps,
                values,
                color=palette(m % 10),
                label=model,
                marker="o" if len(points) <= 30 else None,
                markersize=3,
                linewidth=1.5,
            )
        ax.set_title(metric, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not metrics:
        ax = figure.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center")
        ax.set_axis_off()
    figure.tight_layout()
    return _save(figure, path)


def save_layer_effects(
    path: str | os.PathLike[str], effects: Sequence[float], labels: Sequence[str], title: str
) -> Path:
    """Bars of the attention effect ``‖Y2 - X2‖ / ‖X2‖`` of every ICA layer, in flow order."""
    if len(effects) != len(labels):
        raise ValueError(f"{len(effects)} effects for {len(labels)} layer labels")
    figure = _new_figure(max(6.0, 0.28 * len(effects) + 1.5), 3.2)
    ax = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(effects))
    ax.bar(positions, effects, color="#d9822b")
    ax.set_xticks(positions, labels, rotation=90, fontsize=7)
    ax.set_ylabel("‖Y2 − X2‖ / ‖X2‖")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def save_attention_maps(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    depth: np.ndarray,
    attention: np.ndarray,
    grid: tuple[int, int],
    queries: Sequence[int],
    title: str,
) -> Path:
    """Where cross-modal attention sends each chosen query token.

    ``attention`` is an (L, L) attention map ``P`` (rows sum to about 1; the softmax part of the
    layer's matrix ``A``, see :class:`~mango.flows.InvertibleCrossAttention`) over the tokens of one modality,
    the values ``X2`` (here depth tokens, laid out row-major on ``grid`` = (rows, columns),
    L = rows * columns), computed from the OTHER modality ``X1`` (here RGB): output token i of the
    layer is ``Y2_i = sum_j A_ij X2_j``. For each query token i one row of panels shows the RGB
    image with token i's cell outlined, and the heatmap of ``A[i, :]`` on the grid over the depth
    image: which depth tokens output token i gathers, chosen by RGB. A last panel shows the full
    matrix (square-root colour scale) with the query rows marked.

    In MANGO the attention is masked so that row i may only attend to tokens j >= i (raster order):
    ``A`` is upper triangular, which makes the layer invertible by a triangular solve, and every
    heatmap is zero before its query cell.

    ``rgb`` is (H, W, 3) in [0, 1] and ``depth`` (H, W) (shown min-max normalised); H and W need not
    be multiples of the grid.
    """
    attention = np.asarray(attention, dtype=np.float64)
    rgb, depth = np.asarray(rgb, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    grid_rows, grid_columns = grid
    tokens = grid_rows * grid_columns
    if attention.shape != (tokens, tokens):
        raise ValueError(
            f"save_attention_maps: attention has shape {attention.shape}, expected "
            f"({tokens}, {tokens}) for grid {grid}"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3 or depth.shape != rgb.shape[:2]:
        raise ValueError(
            f"save_attention_maps: rgb {rgb.shape} and depth {depth.shape} must be "
            "(H, W, 3) and (H, W)"
        )
    if not queries or any(not 0 <= q < tokens for q in queries):
        raise ValueError(
            f"save_attention_maps: queries {list(queries)} must be non-empty and in [0, {tokens})"
        )
    from matplotlib import colormaps
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    height, width = depth.shape
    cell_h, cell_w = height / grid_rows, width / grid_columns
    extent = (0, width, height, 0)
    markers = colormaps["tab10"]
    n = len(queries)
    body = max(n * (PANEL + 0.5), 3.6)  # inches of panels; the matrix needs room even for n = 1
    figure = _new_figure(2 * PANEL + 5.0, body + 0.6)
    layout = figure.add_gridspec(
        n,
        3,
        width_ratios=(1, 1.25, 2.2),
        wspace=0.35,
        hspace=0.4,
        left=0.04,
        right=0.94,
        top=body / (body + 0.6),
        bottom=0.04,
    )
    figure.suptitle(title, fontsize=11)
    shown_depth = _normalise(depth)

    def outline(ax: Any, token: int, colour: Any, style: str = "-") -> None:
        r, c = divmod(token, grid_columns)
        ax.add_patch(
            Rectangle(
                (c * cell_w, r * cell_h),
                cell_w,
                cell_h,
                fill=False,
                edgecolor=colour,
                linewidth=2,
                linestyle=style,
            )
        )

    for k, query in enumerate(queries):
        colour = markers(k % 10)
        r, c = divmod(query, grid_columns)
        ax = figure.add_subplot(layout[k, 0])
        _show(ax, np.clip(rgb, 0, 1))
        outline(ax, query, colour)
        ax.set_title(f"RGB: token {query} (row {r}, col {c})", fontsize=8)

        # heat over the depth image (near bright); opacity grows with the weight so that depth
        # stays visible where the token gathers nothing
        weights = attention[query].reshape(grid_rows, grid_columns)
        top = max(float(weights.max()), 1e-12)
        ax = figure.add_subplot(layout[k, 1])
        _show(ax, shown_depth, cmap="gray_r")
        heat = ax.imshow(
            weights,
            cmap="inferno",
            extent=extent,
            interpolation="nearest",
            vmin=0.0,
            vmax=top,
            alpha=0.85 * np.sqrt(np.clip(weights / top, 0, 1)),
        )
        outline(ax, query, colour, "--")
        ax.set_title(f"depth: P[{query}, :]  (P_ii = {attention[query, query]:.2f})", fontsize=8)
        figure.colorbar(heat, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)

    ax = figure.add_subplot(layout[:, 2])
    image = ax.imshow(
        np.clip(attention, 0, None), cmap="viridis", norm=PowerNorm(0.5), interpolation="nearest"
    )
    for k, query in enumerate(queries):
        ax.axhline(query, color=markers(k % 10), linewidth=1.2, alpha=0.9)
    ax.set_title("full attention map P (sqrt scale)", fontsize=9)
    ax.set_xlabel("value token j (depth)", fontsize=8)
    ax.set_ylabel("output / query token i (weights from RGB)", fontsize=8)
    ax.tick_params(labelsize=7)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    return _save(figure, path)
