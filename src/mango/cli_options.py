"""The options of ``mango eval`` and ``mango predict`` for absent and broken inputs
(``docs/missing.md``, ``docs/density.md``), shared by both commands."""

from __future__ import annotations

import typer

MissingOpt = typer.Option(
    None, "--missing", help="Absent modalities, MOD[,MOD] (e.g. depth, or image,text)."
)
MissingRateOpt = typer.Option(
    None,
    "--missing-rate",
    help="Absent for a seeded fraction R of samples (split evenly between the --missing "
    "modalities, the rest complete); default: every sample.",
)
FillOpt = typer.Option(
    None,
    "--fill",
    help="zero (default: the absent input is zeroed), mean (the training mean of its tokens), "
    "regress (the imputer of model.imputer) or impute (by the flow).",
)
MissingTableOpt = typer.Option(
    None,
    "--missing-table",
    help="Per-sample table file (one line per sample: absent modalities or '-'), e.g. a "
    "shipped protocol table; replaces --missing-rate.",
)


ImputeStepsOpt = typer.Option(
    None, "--impute-steps", help="--fill impute: gradient-ascent steps on log p (default 20)."
)
ImputeStartOpt = typer.Option(
    None,
    "--impute-start",
    help="--fill impute: start from the flow's mode ('prior', default) or the zero-filled tokens.",
)


CorruptOpt = typer.Option(
    None,
    "--corrupt",
    help="Break one input of a seeded share of the samples, MOD:KIND[:STRENGTH] with KIND "
    "noise, blank, shift, swap or scale; reports detection AUROCs and the blame (docs/density.md).",
)
CorruptShareOpt = typer.Option(
    None, "--corrupt-share", help="--corrupt: the share of corrupted samples (default 0.5)."
)
CorruptSeedOpt = typer.Option(
    None, "--corrupt-seed", help="--corrupt: the seed of which samples and how (default 0)."
)
ScoresOpt = typer.Option(
    None,
    "--scores",
    help="--corrupt: per-sample scores JSONL (default: beside --out as OUT.scores.jsonl).",
)
