"""Report figures and the self-contained HTML report (used by ``mango demo``)."""

from mango.report.figures import (
    class_colours,
    colorize,
    save_attention_maps,
    save_layer_effects,
    save_learning_curves,
    save_prediction_grid,
)
from mango.report.html import Section, write_report
from mango.report.logs import read_lightning_csv

__all__ = [
    "Section",
    "class_colours",
    "colorize",
    "read_lightning_csv",
    "save_attention_maps",
    "save_layer_effects",
    "save_learning_curves",
    "save_prediction_grid",
    "write_report",
]
