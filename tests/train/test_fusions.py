"""Every task's smoke config trains and evaluates with each applicable baseline fusion.

The baselines (``model.fusion``: ``transformer``, ``cross_attention``, ``tokenfusion``,
``geminifusion``, ``cmx``) go through ``mango train`` and ``mango eval`` on each task's generated
fixture, two steps each; the flow's own rows (``mango``, ``concat``) are covered by every task's
tests. Where a baseline does not apply (the aligned ones on unequal token counts), ``mango train``
fails with one line naming ``model.fusion`` and writes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from mango.cli import main
from mango.models.fusion import ALIGNED_FUSIONS, BASELINE_FUSIONS
from mango.testing.mmimdb import write_mmimdb_hdf5_fixture
from mango.testing.rgbd import write_nyudv2_fixture, write_sunrgbd_fixture
from mango.testing.taskonomy import write_taskonomy_fixture
from mango.testing.tensors import write_tensors_fixture

ROOT = Path(__file__).resolve().parents[2]
#: each smoke config's data: a fixture writer, or None (the built-in synthetic scenes)
FIXTURES: dict[str, Callable[[Path], Path] | None] = {
    "mmimdb": write_mmimdb_hdf5_fixture,
    "nyudv2": write_nyudv2_fixture,
    "sunrgbd": write_sunrgbd_fixture,
    "synthetic": None,
    "taskonomy": write_taskonomy_fixture,
    "tensors": write_tensors_fixture,
}
#: tasks whose modalities have different token counts (4 poster vs 32 plot tokens; 6 vs 4)
UNALIGNED = ("mmimdb", "tensors")
SHORT = ["--max-steps", "2", "--set", "trainer.steps_per_checkpoint=2"]
CASES = [(task, fusion) for task in sorted(FIXTURES) for fusion in BASELINE_FUSIONS]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """``--data DIR`` arguments per task (written once for the module)."""
    root = tmp_path_factory.mktemp("fixtures")
    return {
        task: [] if writer is None else ["--data", str(writer(root / task))]
        for task, writer in FIXTURES.items()
    }


def test_every_smoke_config_is_covered() -> None:
    smoke = sorted(p.stem.removesuffix("-smoke") for p in (ROOT / "configs").glob("*-smoke.yaml"))
    assert smoke == sorted(FIXTURES)


@pytest.mark.parametrize("task, fusion", CASES)
def test_smoke_config_trains_and_evaluates_with_the_baseline(
    task: str,
    fusion: str,
    data: dict[str, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    config = ROOT / "configs" / f"{task}-smoke.yaml"
    run = tmp_path / "run"
    sets = ["--set", f"model.fusion={fusion}"]
    if task == "mmimdb":
        for setting in request.getfixturevalue("offline_encoder_overrides"):
            sets += ["--set", setting]
    code = main(["train", "--config", str(config), *data[task], "--out", str(run), *SHORT, *sets])
    if task in UNALIGNED and fusion in ALIGNED_FUSIONS:
        assert code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and "model.fusion" in lines[0] and "equal token counts" in lines[0]
        assert not run.exists()
        return
    assert code == 0
    metrics = tmp_path / "m.json"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert main(["eval", "--checkpoint", str(checkpoint), *data[task], "--out", str(metrics)]) == 0
    scores = json.loads(metrics.read_text())
    numbers = [v for v in scores.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers), scores
    assert "bits_per_dim" not in scores  # no density without a flow
