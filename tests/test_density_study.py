"""The summary of ``make density-study`` (tools/density_study.py), from constructed evaluation
files: each fill's spread, impute − fill paired over seeds, the one-modality models' rows, the
corruption cells (bits/dim against −MSP paired over seeds), and a one-line refusal of
``--summary-only`` without a study."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    path = ROOT / "tools" / "density_study.py"
    spec = importlib.util.spec_from_file_location("mango_density_study", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
MODALITIES = ["rgb", "depth"]


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_summary_pairs_impute_with_every_fill_and_the_one_modality_model(tmp_path: Path) -> None:
    arm = TOOL.arm_name(0.5, 0.0)
    impute, zero, alone = [40.0, 42.0, 44.0], [41.0, 44.0, 47.0], [30.0, 30.0, 30.0]
    for seed in range(3):
        run = tmp_path / arm / f"seed{seed}"
        _write(run / "full.json", {"miou": 80.0 + seed})
        _write(run / "no-depth-impute.json", {"miou": impute[seed]})
        _write(run / "no-depth-zero.json", {"miou": zero[seed]})
        _write(
            tmp_path / TOOL.alone_name(0.5, "rgb") / f"seed{seed}" / "full.json",
            {"miou": alone[seed]},
        )
        if seed == 0:
            _write(run / "corrupt-depth-blank.json", {"detection_auroc": {"bits_per_dim": 0.2}})
        _write(
            run / "corrupt-depth-noise.json",
            {
                "miou": 60.0 + seed,
                "detection_auroc": {"bits_per_dim": 0.9 + 0.05 * seed, "neg_msp": 0.5},
                "blame_accuracy": 1.0,
            },
        )
    text = TOOL.summarise(tmp_path, [(arm, 0.5)], [0, 1, 2], MODALITIES, "miou")
    lines = text.splitlines()
    # impute − zero = −1, −2, −3: mean −2, sd 1, t₂ = 4.303: −2 ∓ 4.303/√3
    assert "| without depth | zero | 44.00 ± 3.00 | -2.00 [-4.48, +0.48] |" in lines
    assert (
        "| without depth | model trained on rgb alone | 30.00 ± 0.00 | +12.00 [+7.03, +16.97] |"
        in lines
    )
    assert "| without depth | mean | – | – |" in lines  # not run: no cell invented
    assert "| complete | – | 81.00 ± 1.00 | |" in lines
    noise = next(line for line in lines if line.startswith("| depth: noise |"))
    # bits/dim − (−MSP) = 0.40, 0.45, 0.50: mean 0.45, sd 0.05, 0.45 ∓ 4.303 · 0.05/√3
    assert noise == (
        "| depth: noise | 61.00 ± 1.00 | 0.95 ± 0.05 | 0.50 ± 0.00 | – | – | 1.00 ± 0.00 "
        "| +0.45 [+0.33, +0.57] |"
    )
    blank = next(line for line in lines if line.startswith("| depth: blank |"))
    assert blank == "| depth: blank | – | 0.20 (n=1) | – | – | – | – | – |"  # one seed: said so
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved[arm]["only-rgb"] == alone
    assert (tmp_path / "summary.md").read_text() == text + "\n"


def test_summary_only_without_a_study_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        TOOL.main(["--out", str(tmp_path / "none"), "--summary-only"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"--out {tmp_path / 'none'}: no study there to summarise")
