"""``mango ablate``: ablations and baselines as one command, every row on the same data and budget.

Rows (:func:`variants`, from the validated config and the preset; each adds its overrides to
the config, after the preset's and the user's ``--set``).

Presets ``quick`` and ``paper`` (the paper's ablations):

- ``mango``: the config as given, with ``model.fusion=mango``;
- ``concat``: ``model.fusion=concat`` (same encoders and head, no flow);
- ``single_<m>``: ``model.fusion=single``, ``model.modalities=[m]`` for each modality;
- ``partitions_mmca``, ``partitions_mmca_imca``: ``flow.partitions`` cut to MMCA, MMCA + IMCA
  (all three partitions is the ``mango`` row; paper Table 5);
- ``blocks_6`` .. ``blocks_16``: ``flow.blocks=N`` (paper Table 7);
- ``coupling_only``: ``flow.partitions=[]``, blocks of ActNorm + affine coupling (paper Table 4).

Preset ``baselines`` (the paper's thesis: MANGO against attention-based fusion of equal size):
``mango``, ``coupling_only``, ``concat``, ``late`` (where the task has it), one row per
attention baseline (``transformer``, ``cross_attention``, ``tokenfusion``, ``geminifusion``,
``cmx``; ``model.fusion=<name>``), ``control_noise`` (MANGO with the second modality replaced
by Gaussian noise of its shape, ``model.noise=[m]``) and ``single_*``.

A row the task's model section cannot express (no ``concat`` or ``single`` fusion, no
``modalities`` list, unequal token counts for an aligned baseline) is skipped with a note.
``paper`` also sets ``flow.blocks=12`` (the paper's depth) for every row but ``blocks_N``.

Seeds: every row is trained once per seed (``seeds``; default the config's
``trainer.seed``) into ``OUT/runs/<row>/seed<s>/``. The table gives, per row, the mean ± sd
over seeds, every seed's value, and the paired difference from ``mango`` (same seeds) with its
95 % Student-t interval (:func:`paired_interval`).

Resume rule, per row and seed: a folder whose ``row.json`` exists is reused as it is; one with a
checkpoint but no ``row.json`` is resumed (``train(resume=True)``; a checkpoint already at
``max_steps`` trains no further step) and evaluated; any other is trained. Every row and seed is
validated (config and model) before any training starts, and a folder trained with another
config is an error, so a table never mixes budgets. ``ablation.json`` and ``ablation.md`` are
rewritten atomically after every run.

Modules: :mod:`~mango.ablate.rows` (the rows, seeds and their validation),
:mod:`~mango.ablate.table` (per-row summary, paired intervals, ``ablation.md``) and
:mod:`~mango.ablate.run` (training and evaluating every row, resuming).
"""

from mango.ablate.rows import PRESETS, Row, Variant, parse_seeds, plan, variants
from mango.ablate.run import run_ablation
from mango.ablate.table import interval_text, markdown, paired_interval, summarise

__all__ = [
    "PRESETS",
    "Row",
    "Variant",
    "interval_text",
    "markdown",
    "paired_interval",
    "parse_seeds",
    "plan",
    "run_ablation",
    "summarise",
    "variants",
]
