"""What ``mango demo`` trains and reports: the config, its five models and the entries of
``metrics.json``. :mod:`mango.demo.run` trains and evaluates them, :mod:`mango.demo.report`
writes the report; both read their vocabulary here.
"""

from __future__ import annotations

from typing import Any

#: the demo's fusion model; the single-modality models change only model.modalities/fusion
DEMO_CONFIG: dict[str, Any] = {
    "task": "synthetic",
    "data": {
        "size": 64,
        "train_scenes": 4000,
        "val_scenes": 100,
        "test_scenes": 300,
        "misregistration": 0.125,
    },
    "model": {"encoder": "conv-small", "fuse_stages": [2], "dim": 32, "head_dim": 64},
    "flow": {"blocks": 4, "coupling_hidden": 64},
    "loss": {"nll_weight": 0.1},
    "optim": {"lr": 2e-3, "head_lr_mult": 1.0, "warmup_steps": 20, "schedule": "cosine"},
    "trainer": {
        "max_steps": 400,
        "global_batch": 16,
        "steps_per_checkpoint": 100,
        "log_every": 10,
        "accelerator": "cpu",
    },
}
QUICK_OVERRIDES = [
    "trainer.max_steps=150",
    "trainer.steps_per_checkpoint=50",
    "data.test_scenes=100",
    "data.size=48",
]
MODELS = {
    "fusion": ["model.fusion=mango", "model.modalities=[rgb, depth]"],
    "concat": ["model.fusion=concat", "model.modalities=[rgb, depth]"],
    "transformer": ["model.fusion=transformer", "model.modalities=[rgb, depth]"],
    "rgb_only": ["model.fusion=single", "model.modalities=[rgb]"],
    "depth_only": ["model.fusion=single", "model.modalities=[depth]"],
}
#: the fusion checkpoint evaluated with its cross-modal attention switched off
ATTENTION_OFF = "fusion_attention_off"
#: the fusion checkpoint evaluated without depth: zero-filled, and imputed by its flow (the
#: other fills, mean and regress: docs/density.md)
DEMO_FILLS = ("zero", "impute")
MISSING_DEPTH = {fill: f"fusion_missing_depth_{fill}" for fill in DEMO_FILLS}
#: shorter column titles in the prediction figure
FIGURE_LABELS = {
    MISSING_DEPTH["zero"]: "no depth: zero fill",
    MISSING_DEPTH["impute"]: "no depth: imputed",
}
#: the entries of metrics.json, in report order
ENTRIES = (
    "fusion",
    ATTENTION_OFF,
    "concat",
    "transformer",
    "rgb_only",
    "depth_only",
    *MISSING_DEPTH.values(),
)
#: the scores of each evaluation that metrics.json keeps
KEPT_SCORES = (
    "miou",
    "pixel_acc",
    "mean_acc",
    "per_class_iou",
    "bits_per_dim",
    "attention_effect",
    "round_trip_error",
    "impute_ms_per_sample",
    "impute_bits_per_dim",
    "impute_start_bits_per_dim",
    "impute_conditional_gain_bits",
)
