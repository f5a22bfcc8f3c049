"""``mango demo``: flow fusion vs concatenation and each single modality on synthetic RGB-D scenes.

Trains five models with identical encoders, decoder and schedule — MANGO fusion of RGB and
depth, concatenation fusion, a joint Transformer fusion with as many parameters as the flow
(``transformer``: the implicit attention the paper argues against; every baseline, over seeds,
is in ``mango ablate --preset baselines``), RGB only, depth only — on procedurally generated
scenes whose classes need both colour and depth and whose depth map is misregistered against the RGB image
(:mod:`mango.data.synthetic`). It evaluates them on held-out test scenes (never used for any
choice), evaluates the fusion model once more with its cross-modal attention switched off
(``fusion_attention_off``: the same checkpoint, the rest unchanged) and with depth absent
(``fusion_missing_depth_zero`` / ``_impute``: zero-filled, or imputed by its flow), and writes
``metrics.json`` and ``report.html`` with figures. Everything is offline and runs on a CPU.

The package: :mod:`~mango.demo.spec` (what is trained and reported), :mod:`~mango.demo.run`
(:func:`~mango.demo.run.run_demo`: train, evaluate, write ``metrics.json``) and
:mod:`~mango.demo.report` (the report and its figures).
"""
