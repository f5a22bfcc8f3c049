"""Every fill on a trained checkpoint (--fill zero|mean|regress|impute), the imputer's training
(model.imputer) beside an unchanged task path, refusals in one line, and --corrupt end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mango.cli import main
from mango.train.checkpoint import read_checkpoint
from mango.train.corrupt import corrupted_rows

pytestmark = pytest.mark.usefixtures("one_thread")


ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "synthetic-smoke.yaml"
#: tiny and shaded, trained with modality dropout; a gradient clip so small that it always acts,
#: so an imputer whose gradient joined the task's clipping norm would change the task weights
RECIPE = [
    "data.train_scenes=32",
    "data.val_scenes=8",
    "data.test_scenes=8",
    "data.shading=0.5",
    "data.modality_dropout=0.3",
    "optim.grad_clip=0.001",
]


def _train(out: Path, *extra: str) -> Path:
    sets = [a for s in (*RECIPE, *extra) for a in ("--set", s)]
    assert (
        main(["train", "--config", str(SMOKE), "--out", str(out), "--max-steps", "4", *sets]) == 0
    )
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fills")
    return {
        "imputer": _train(root / "imputer", "model.imputer=true"),
        "plain": _train(root / "plain"),
    }


def _eval(checkpoint: Path, out: Path, *flags: str) -> dict:
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_the_imputer_trains_beside_an_unchanged_task_path(runs: dict[str, Path]) -> None:
    with_imputer = read_checkpoint(runs["imputer"])["state_dict"]
    without = read_checkpoint(runs["plain"])["state_dict"]
    imputer = [k for k in with_imputer if k not in without]
    assert imputer and all(".filler.regressors." in k for k in imputer)
    for key, value in without.items():  # task weights and the training means: bit for bit
        assert torch.equal(with_imputer[key], value), key
    means = [k for k in without if k.endswith("filler.mean")]
    assert means and all(without[k].abs().sum() > 0 for k in means)


def test_every_fill_on_one_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    full = _eval(runs["imputer"], tmp_path / "full.json")
    results = {
        fill: _eval(
            runs["imputer"], tmp_path / f"{fill}.json", "--missing", "depth", "--fill", fill
        )
        for fill in ("zero", "mean", "regress", "impute")
    }
    assert {fill: r["fill"] for fill, r in results.items()} == {f: f for f in results}
    bits = {fill: r["bits_per_dim"] for fill, r in results.items()}
    assert len(set(bits.values())) == 4 and full["bits_per_dim"] not in bits.values()
    assert results["impute"]["impute_samples"] == 8
    partial = _eval(
        runs["imputer"], tmp_path / "half.json", "--missing", "rgb", "--missing-rate", "0.5",
        "--fill", "regress",
    )  # fmt: skip
    assert partial["missing_rate"] == 0.5 and partial["fill"] == "regress"


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mango: error: ")
    return err


def test_a_checkpoint_without_an_imputer_refuses_regress(
    runs: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    err = _error(
        capsys,
        "eval",
        "--checkpoint",
        str(runs["plain"]),
        "--missing",
        "depth",
        "--fill",
        "regress",
    )
    assert "--fill regress" in err and "model.imputer" in err
    err = _error(
        capsys, "predict", "--checkpoint", str(runs["plain"]), "--out", "unused", "--missing",
        "depth", "--fill", "regress",
    )  # fmt: skip
    assert "--fill regress" in err and "model.imputer" in err


def test_an_earlier_checkpoint_loads_but_refuses_mean(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint written before the training means: every other fill still works."""
    saved = torch.load(runs["plain"], map_location="cpu", weights_only=True)
    saved["state_dict"] = {
        k: v
        for k, v in saved["state_dict"].items()
        if not k.endswith(("filler.mean", "filler.steps"))
    }
    earlier = tmp_path / "earlier.ckpt"
    torch.save(saved, earlier)
    zero = _eval(earlier, tmp_path / "zero.json", "--missing", "depth")
    assert zero["fill"] == "zero"
    err = _error(
        capsys, "eval", "--checkpoint", str(earlier), "--missing", "depth", "--fill", "mean"
    )
    assert "--fill mean" in err and "no training mean" in err


def test_corrupted_inputs_are_scored_blamed_and_written_per_sample(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "noise.json"
    result = _eval(runs["imputer"], out, "--corrupt", "depth:noise:3")
    assert result["corrupt"] == {
        "modality": "depth", "kind": "noise", "strength": 3.0, "share": 0.5, "seed": 0,
        "samples": 4,
    }  # fmt: skip
    aurocs = result["detection_auroc"]
    assert set(aurocs) == {"bits_per_dim", "neg_msp", "energy", "gain_bits"}
    assert all(0.0 <= v <= 1.0 for v in aurocs.values())
    assert 0.0 <= result["blame_accuracy"] <= 1.0 and sum(result["blame_counts"].values()) == 4
    assert result["scores"] == str(tmp_path / "noise.scores.jsonl")
    lines = [json.loads(line) for line in Path(result["scores"]).read_text().splitlines()]
    assert [line["position"] for line in lines] == list(range(8))
    assert [line["corrupted"] for line in lines] == corrupted_rows(8, 0.5, 0).tolist()
    assert all(set(line["gains"]) == {"rgb", "depth"} for line in lines)
    clean = _eval(runs["imputer"], tmp_path / "clean.json")
    assert result["miou"] != clean["miou"] or result["bits_per_dim"] != clean["bits_per_dim"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--corrupt", "audio:noise"], "--corrupt: 'audio' is not a modality of this model"),
        (["--corrupt", "depth:melt"], "--corrupt: kind must be one of"),
        (["--corrupt", "depth:noise", "--missing", "rgb"], "--corrupt: evaluates with every"),
        (["--scores", "s.jsonl"], "--scores: needs --corrupt"),
        (["--corrupt-share", "0.2"], "--corrupt-share: needs --corrupt"),
        (["--missing", "depth", "--fill", "median"], "--fill: expected one of zero, mean, regress"),
    ],
)
def test_bad_flags_are_one_line(
    runs: dict[str, Path], capsys: pytest.CaptureFixture, flags: list[str], words: str
) -> None:
    assert words in _error(capsys, "eval", "--checkpoint", str(runs["plain"]), *flags)
