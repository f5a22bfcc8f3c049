"""The ``mango`` command line (``docs/cli.md``).

Every command turns bad input into one line on stderr naming the file or field at fault and a
non-zero exit code; ``mango --debug <command>`` shows the full traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import typer

from mango import __version__
from mango.cli_options import (
    CorruptOpt,
    CorruptSeedOpt,
    CorruptShareOpt,
    FillOpt,
    ImputeStartOpt,
    ImputeStepsOpt,
    MissingOpt,
    MissingRateOpt,
    MissingTableOpt,
    ScoresOpt,
)
from mango.errors import Interrupted, MangoError

app = typer.Typer(
    name="mango",
    help="MANGO: multimodal fusion with exact normalizing flows (invertible cross-attention).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mango {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


DataOpt = typer.Option(None, "--data", help="Dataset root folder (sets data.root).")
SetOpt = typer.Option(
    [], "--set", help="Override a config field: --set trainer.max_steps=100 (repeatable)."
)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _progress() -> bool:
    return sys.stderr.isatty() or bool(os.environ.get("MANGO_PROGRESS"))


@app.command()
def train(
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML run config (see configs/); with --resume, defaults to OUT/config.yaml.",
    ),
    data: Path = DataOpt,
    out: Path = typer.Option(
        Path("runs/latest"), "--out", "-o", help="Run folder for checkpoints, logs, weights."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after N optimisation steps (sets trainer.max_steps)."
    ),
    devices: int = typer.Option(
        None, "--devices", help="Number of devices/processes (sets trainer.devices)."
    ),
    strategy: str = typer.Option(
        None, "--strategy", help="Lightning strategy, e.g. ddp (sets trainer.strategy)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.ckpt."),
    overrides: list[str] = SetOpt,
) -> None:
    """Train a model; writes OUT/checkpoints/last.ckpt, OUT/config.yaml, logs and weights.safetensors."""
    from mango.train.run import load_config
    from mango.train.run import train as run_train

    if config is None:
        if not resume:
            raise MangoError("--config: required (or --resume with OUT/config.yaml)")
        config = out / "config.yaml"
    extra = list(overrides)
    for key, value in (("max_steps", max_steps), ("devices", devices), ("strategy", strategy)):
        if value is not None:
            extra.append(f"trainer.{key}={value}")
    task, cfg = load_config(config, extra, data)
    result = run_train(task, cfg, out, resume=resume, progress=_progress(), announce=True)
    if result.rank != 0:
        return  # one summary line per run, as one split line: rank 0 prints them
    summary = ", ".join(
        f"{k}={v:.2f}" for k, v in result.val_metrics.items() if isinstance(v, float)
    )
    typer.echo(
        f"trained {result.steps} steps -> {result.checkpoint}"
        + (f" ({summary})" if summary else "")
    )


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A checkpoint written by mango train."
    ),
    data: Path = DataOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val or test."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the metrics JSON here."),
    ablate: str = typer.Option(
        None,
        "--ablate",
        help="'attention': every flow's cross-modal attention switched off (the rest unchanged).",
    ),
    missing: str = MissingOpt,
    missing_rate: float = MissingRateOpt,
    fill: str = FillOpt,
    missing_table: Path = MissingTableOpt,
    impute_steps: int = ImputeStepsOpt,
    impute_start: str = ImputeStartOpt,
    corrupt: str = CorruptOpt,
    corrupt_share: float = CorruptShareOpt,
    corrupt_seed: int = CorruptSeedOpt,
    scores: Path = ScoresOpt,
    overrides: list[str] = SetOpt,
) -> None:
    """Evaluate a checkpoint; prints and (with --out) writes the metrics as JSON.

    Models with a flow also report its health: attention_effect (mean ||Y2 - X2|| / ||X2|| over
    ICA layers) and round_trip_error (float32 ||f^-1(f(x)) - x|| / ||x||) on the evaluated tokens.
    With --missing, the setting is recorded and --fill impute adds its cost and likelihoods.
    With --corrupt, the detection AUROC of each score and the blame accuracy are added.
    """
    from mango.train.corrupt import CorruptSetting
    from mango.train.missing import MissingSetting
    from mango.train.run import evaluate as run_eval

    absent = MissingSetting.parse(
        missing, missing_rate, fill, 0, _text(missing_table), impute_steps, impute_start
    )
    broken = CorruptSetting.parse(corrupt, corrupt_share, corrupt_seed)
    results = run_eval(
        checkpoint,
        data,
        split,
        out,
        overrides,
        _progress(),
        ablate=ablate,
        missing=absent,
        corrupt=broken,
        scores=scores,
    )
    typer.echo(json.dumps(results, indent=2))


@app.command()
def info(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A checkpoint written by mango train."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON."),
) -> None:
    """How a checkpoint was made: global batch and its split, precision, seed, steps, samples,
    wall time, devices, versions and git commit (one entry per restart when it was resumed)."""
    from mango.train.checkpoint import read_checkpoint
    from mango.train.record import describe

    saved = read_checkpoint(checkpoint)
    record = saved["mango"].get("record")
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(
        f"checkpoint  {checkpoint} (task {saved['mango']['config'].get('task')}, "
        f"step {saved.get('global_step')})"
    )
    typer.echo(describe(record))


@app.command()
def predict(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A checkpoint written by mango train."
    ),
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the prediction images."),
    split: str = typer.Option("test", "--split", help="Split to predict."),
    missing: str = MissingOpt,
    missing_rate: float = MissingRateOpt,
    fill: str = FillOpt,
    missing_table: Path = MissingTableOpt,
    impute_steps: int = ImputeStepsOpt,
    impute_start: str = ImputeStartOpt,
    overrides: list[str] = SetOpt,
) -> None:
    """Write colour-coded predictions (or image grids) for every sample of a split."""
    from mango.train.missing import MissingSetting
    from mango.train.run import predict as run_predict

    absent = MissingSetting.parse(
        missing, missing_rate, fill, 0, _text(missing_table), impute_steps, impute_start
    )
    written = run_predict(
        checkpoint, data, out, split, overrides, progress=_progress(), missing=absent
    )
    typer.echo(f"wrote {len(written)} files to {out}")


#: the on-disk layouts `mango data check` knows (every task but the built-in synthetic scenes)
LAYOUTS = ("nyudv2", "sunrgbd", "taskonomy", "mmimdb", "tensors")
data_app = typer.Typer(help="Dataset utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    layout: str = typer.Option(
        ..., "--layout", help="nyudv2, sunrgbd, taskonomy, mmimdb or tensors."
    ),
    data: Path = typer.Option(..., "--data", help="Dataset root folder."),
) -> None:
    """Check a dataset folder: counts, missing/unreadable files, sizes, dtypes, label ranges."""
    from mango.tasks.base import get_task

    if layout not in LAYOUTS:
        raise MangoError(f"--layout: unknown layout {layout!r}; choose {', '.join(LAYOUTS)}")
    if not data.is_dir():
        raise MangoError(f"{data}: dataset folder not found")
    report = get_task(layout).check_data(data)
    for line in report.warnings:
        typer.echo(f"warning: {line}", err=True)
    for line in report.errors:
        typer.echo(f"error: {line}", err=True)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(
        Path("demo-out"), "--out", "-o", help="Folder for metrics.json, report.html and figures."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="A shorter run (about 2 minutes on 2 CPU cores)."
    ),
) -> None:
    """Train fusion, RGB-only and depth-only models on synthetic RGB-D scenes; write a report."""
    from mango.demo.run import run_demo

    result = run_demo(out, quick=quick, progress=_progress())
    typer.echo(result)


@app.command()
def ablate(
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (see configs/)."),
    data: Path = DataOpt,
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for runs/<row>/, ablation.json and ablation.md."
    ),
    preset: str = typer.Option(
        "quick",
        "--preset",
        help="quick: the paper's ablations with the config as it is; paper: also "
        "flow.blocks=12 outside the blocks_N rows; baselines: MANGO against the attention "
        "baselines of equal size, concat, late, a noise control and single modalities.",
    ),
    only: str = typer.Option(
        None, "--only", help="Comma-separated rows to run, e.g. mango,concat,coupling_only."
    ),
    seeds: str = typer.Option(
        None,
        "--seeds",
        help="N (N seeds from trainer.seed) or a comma list, e.g. 0,1,2: every row once per seed.",
    ),
    overrides: list[str] = SetOpt,
) -> None:
    """Train and evaluate ablation or baseline rows, over seeds, with paired intervals.

    Every row shares the config's data and budget (--set applies to all rows).
    Finished runs (OUT/runs/<row>/seed<s>/row.json) are reused, runs with only a
    checkpoint are resumed. Writes OUT/ablation.json and OUT/ablation.md after
    every run. See docs/ablate.md.
    """
    from mango.ablate import run_ablation
    from mango.errors import ConfigError

    for name, value in (("--config", config), ("--out", out)):
        if value is None:
            raise ConfigError(f"{name}: required (mango ablate --config FILE --out DIR)")
    table = run_ablation(
        config, out, data, preset, only, overrides, progress=_progress(), seeds=seeds
    )
    typer.echo(table, nl=False)


@app.command()
def bench(
    out: Path = typer.Option(None, "--out", "-o", help="Write the results as JSON here."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, fewer repeats."),
    compile: bool = typer.Option(
        False, "--compile", help="Add row 6: torch.compile vs eager (compiling takes minutes)."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu or cuda (synchronized timings, plus peak memory of the recipes' steps).",
    ),
) -> None:
    """Speed and memory ratios of MANGO against baselines measured in the same run."""
    from mango.bench.suite import run

    run(out, quick=quick, compile=compile, device=device)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Usage-error classes: click's, plus the copy of click that recent typer versions vendor."""
    try:
        from typer._click.exceptions import ClickException as Vendored
    except ImportError:
        return (click.ClickException,)
    return (click.ClickException, Vendored)


#: a bad or missing option: click's message and exit code 2, no traceback
USAGE_ERRORS = _usage_errors()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (errors print one line unless ``--debug``)."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="mango", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except USAGE_ERRORS as usage:
        usage.show()
        return usage.exit_code
    except click.exceptions.Abort:
        typer.echo("mango: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("mango: interrupted", err=True)
        return 130
    except Interrupted as stopped:
        typer.echo(f"mango: interrupted: {stopped}", err=True)
        return 130
    except MangoError as error:
        if _state["debug"]:
            raise
        if not error.duplicate:
            typer.echo(f"mango: error: {error}", err=True)
        return 2
    except Exception as error:  # noqa: BLE001 - the last line of defence for users
        if _state["debug"]:
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        typer.echo(
            f"mango: error: {type(error).__name__}: {first} (run `mango --debug ...` for the traceback)",
            err=True,
        )
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
