"""Absent modalities: seeded tables, table files, training dropout, and eval/predict with
--missing / --missing-rate / --fill on the synthetic task (every flag error is one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mango.cli import main
from mango.errors import ConfigError, DataError
from mango.train.data import TransformedDataset
from mango.train.missing import (
    MissingDataset,
    MissingSetting,
    ModalityDropout,
    absent_table,
    read_table,
    write_table,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "synthetic-smoke.yaml"
FAST = [
    "--set",
    "data.train_scenes=32",
    "--set",
    "data.val_scenes=8",
    "--set",
    "data.test_scenes=8",
]


@pytest.mark.parametrize("count", [1, 7, 100, 1001])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.7, 1.0])
def test_tables_split_the_rate_evenly_and_disjointly(count: int, rate: float) -> None:
    both = absent_table(count, ["image", "text"], rate, seed=3)
    assert both.shape == (count, 2) and not (both.sum(1) > 1).any()
    assert both[:, 0].sum() == both[:, 1].sum() <= count // 2
    assert abs(both.sum() - rate * count) <= 1
    one = absent_table(count, ["depth"], rate, seed=3)
    assert one.sum() == round(rate * count)
    assert np.array_equal(one, absent_table(count, ["depth"], rate, seed=3))
    assert absent_table(count, ["depth", "rgb"], None).all()


def test_table_files_round_trip_and_bad_lines(tmp_path: Path) -> None:
    table = absent_table(9, ["image", "text"], 0.7, seed=1)
    path = tmp_path / "t.txt"
    write_table(path, table, ["image", "text"])
    assert np.array_equal(read_table(path, 9, ["image", "text"]), table)
    assert set(path.read_text().split()) <= {"-", "image", "text"}
    with pytest.raises(DataError, match="9 lines for a split of 10 samples"):
        read_table(path, 10, ["image", "text"])
    path.write_text("-\naudio\n")
    with pytest.raises(DataError, match=f"^{path} line 2: unknown modality 'audio'"):
        read_table(path, 2, ["image", "text"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((None, 0.5, None), "--missing-rate: needs --missing"),
        ((None, None, "impute"), "--fill: needs --missing"),
        (("depth,depth", None, None), "--missing: expected MOD[,MOD] (distinct names)"),
        (("depth", 1.5, None), "--missing-rate: expected a fraction in [0, 1], got 1.5"),
        (("depth", None, "median"), "--fill: expected one of zero, mean, regress, impute, got"),
    ],
)
def test_bad_flags(args: tuple, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MissingSetting.parse(*args)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_missing_dataset_and_dropout_are_deterministic() -> None:
    base = TransformedDataset([{"x": torch.zeros(1)} for _ in range(6)], lambda s, g: s)
    table = absent_table(6, ["depth"], 0.5, seed=0)
    data = MissingDataset(base, ["depth"], ["rgb", "depth"], table)
    present = [data[(i, None)]["present"] for i in range(6)]
    assert [p["depth"] for p in present] == (~table[:, 0]).tolist()
    assert all(p["rgb"] for p in present)
    dropout = ModalityDropout(lambda s, g: s, ["rgb", "depth"], p=0.5)
    draws = [dropout({}, torch.Generator().manual_seed(seed))["present"] for seed in range(400)]
    again = [dropout({}, torch.Generator().manual_seed(seed))["present"] for seed in range(400)]
    assert draws == again
    dropped = [m for d in draws for m, kept in d.items() if not kept]
    assert 150 < len(dropped) < 250 and 0.35 < dropped.count("rgb") / len(dropped) < 0.65
    assert all(sum(not v for v in d.values()) <= 1 for d in draws)
    assert dropout({}, None)["present"] == {"rgb": True, "depth": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = ["train", "--config", str(SMOKE), "--out", str(run), "--max-steps", "10", *FAST]
    assert main([*args, "--set", "data.modality_dropout=0.3"]) == 0
    return run / "checkpoints" / "last.ckpt"


def _eval(checkpoint: Path, out: Path, *flags: str) -> dict:
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_eval_records_the_setting_and_imputation(trained: Path, tmp_path: Path) -> None:
    full = _eval(trained, tmp_path / "full.json")
    assert "missing" not in full
    zero = _eval(trained, tmp_path / "zero.json", "--missing", "depth")
    assert zero["missing"] == ["depth"] and zero["missing_rate"] == 1.0 and zero["fill"] == "zero"
    assert zero["miou"] != full["miou"] or zero["bits_per_dim"] != full["bits_per_dim"]
    impute = _eval(trained, tmp_path / "impute.json", "--missing", "depth", "--fill", "impute")
    assert impute["fill"] == "impute" and impute["impute_samples"] == 8
    assert impute["impute_ms_per_sample"] > 0
    assert impute["impute_bits_per_dim"] <= impute["impute_start_bits_per_dim"]
    assert impute["impute_conditional_gain_bits"] >= 0
    half = _eval(trained, tmp_path / "half.json", "--missing", "rgb,depth", "--missing-rate", "0.5")
    assert half["missing_rate"] == 0.5 and half["missing"] == ["rgb", "depth"]


def test_predict_with_imputation(trained: Path, tmp_path: Path) -> None:
    args = ["predict", "--checkpoint", str(trained), "--out", str(tmp_path / "p")]
    assert main([*args, "--missing", "rgb", "--fill", "impute"]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) >= 8


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--missing", "audio"], "--missing: 'audio' is not a modality of this model"),
        (["--fill", "impute"], "--fill: needs --missing"),
        (["--missing", "depth", "--missing-rate", "-1"], "--missing-rate: expected a fraction"),
    ],
)
def test_bad_missing_flags_are_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list, words: str
) -> None:
    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(trained), "--out", str(out), *flags]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


def test_impute_needs_a_flow(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "concat"
    args = ["train", "--config", str(SMOKE), "--out", str(run), "--max-steps", "2", *FAST]
    assert main([*args, "--set", "model.fusion=concat"]) == 0
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert _eval(checkpoint, tmp_path / "z.json", "--missing", "depth")["fill"] == "zero"
    capsys.readouterr()
    flags = ["--missing", "depth", "--fill", "impute"]
    assert main(["eval", "--checkpoint", str(checkpoint), *flags]) == 2
    assert "holds a model without a flow" in capsys.readouterr().err


def test_dropout_needs_two_modalities(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sets = ["--set", "model.fusion=single", "--set", "model.modalities=[rgb]"]
    sets += ["--set", "data.modality_dropout=0.2"]
    args = ["train", "--config", str(SMOKE), "--out", str(tmp_path / "r"), "--max-steps", "2"]
    assert main([*args, *FAST, *sets]) == 2
    assert "data.modality_dropout: the model uses 1 modality" in capsys.readouterr().err


def test_training_with_a_fixed_missing_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--config", str(SMOKE), "--max-steps", "2", *FAST]
    sets = ["--set", "data.missing=[depth]", "--set", "data.missing_rate=0.5"]
    assert main([*args, "--out", str(tmp_path / "ok"), *sets]) == 0
    capsys.readouterr()
    bad = ["--set", "data.missing=[audio]"]
    assert main([*args, "--out", str(tmp_path / "bad"), *bad]) == 2
    err = capsys.readouterr().err
    assert "data.missing: 'audio' is not a modality of this model" in err
