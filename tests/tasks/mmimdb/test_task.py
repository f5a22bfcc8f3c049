"""MM-IMDb end to end: train -> eval -> predict through the CLI on both fixture formats, the
fusion baselines, checkpoints without frozen encoders, class weights, one-line data errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from mango.cli import main
from mango.errors import ConfigError
from mango.models.classification import (
    FUSIONS,
    ClassificationOutput,
    GenreClassifier,
    image_token_count,
)
from mango.models.encoders.mobilenet import MobileNetV2
from mango.models.fusion import ALIGNED_FUSIONS, BASELINE_FUSIONS
from mango.tasks.mmimdb.genres import GENRES
from mango.tasks.mmimdb.task import PREDICTIONS_FILE, MMIMDbTask, balanced_pos_weight
from mango.train.data import eval_loader
from mango.train.run import load_config, metrics_logs

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "mmimdb-smoke.yaml"
THRESHOLD = 0.45  # near the untrained probabilities, so both predicted and missed genres occur


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is as fast


@pytest.fixture(scope="module", params=["hdf5", "raw"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-step smoke run on one fixture format, then eval and predict (all via the CLI)."""
    data = request.getfixturevalue(f"{request.param}_root")
    out = tmp_path_factory.mktemp(f"run_{request.param}")
    checkpoint = str(out / "checkpoints" / "last.ckpt")
    train = ["train", "--config", str(SMOKE), "--data", str(data), "--out", str(out)]
    assert main([*train, "--max-steps", "20"]) == 0
    threshold = ["--set", f"model.threshold={THRESHOLD}"]
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                checkpoint,
                "--split",
                "test",
                "--out",
                str(out / "m.json"),
                *threshold,
            ]
        )
        == 0
    )
    assert (
        main(["eval", "--checkpoint", checkpoint, "--split", "val", "--out", str(out / "val.json")])
        == 0
    )
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                "--data",
                str(data),
                "--out",
                str(out / "pred"),
                *threshold,
            ]
        )
        == 0
    )
    return out


def _records(run: Path) -> list[dict]:
    lines = (run / "pred" / PREDICTIONS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_eval_writes_all_f1_scores(run: Path) -> None:
    metrics = json.loads((run / "m.json").read_text())
    for key in ("f1_micro", "f1_macro", "f1_weighted", "f1_samples"):
        assert 0.0 <= metrics[key] <= 100.0
    assert list(metrics["per_genre_f1"]) == list(GENRES)
    assert metrics["samples"] == 4 and metrics["split"] == "test"
    assert math.isfinite(metrics["bits_per_dim"])


def test_predictions_one_line_per_test_movie_consistent_with_eval(run: Path) -> None:
    records = _records(run)
    assert [r["id"] for r in records] == ["0000010", "0000011", "0000012", "0000013"]
    for r in records:
        assert list(r["probabilities"]) == list(GENRES)
        assert r["genres"] == [g for g, p in r["probabilities"].items() if p > THRESHOLD]
        assert r["true_genres"] and set(r["true_genres"]) <= set(GENRES)
    truth = np.array([[g in r["true_genres"] for g in GENRES] for r in records])
    predicted = np.array([[g in r["genres"] for g in GENRES] for r in records])
    metrics = json.loads((run / "m.json").read_text())
    expected = 100 * f1_score(truth, predicted, average="micro", zero_division=0)
    assert metrics["f1_micro"] == pytest.approx(expected, abs=1e-4)
    expected = 100 * f1_score(truth, predicted, average="samples", zero_division=0)
    assert metrics["f1_samples"] == pytest.approx(expected, abs=1e-4)


def test_checkpoint_has_no_frozen_encoder_weights_and_reloads_identically(run: Path) -> None:
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.stat().st_size < 3_000_000  # frozen MobileNetV2 alone is ~9 MB, MiniLM ~90 MB
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert state and not any(".encoders." in key for key in state)
    assert any(key.startswith("model.fusion.flow.") for key in state)
    # the last validation of the training run (in-memory model) vs eval of the reloaded checkpoint
    with (metrics_logs(run)[-1]).open() as f:
        rows = [row for row in csv.DictReader(f) if row["val/bits_per_dim"]]
    logged = rows[-1]
    assert int(logged["step"]) == 19
    reloaded = json.loads((run / "val.json").read_text())
    assert reloaded["samples"] == 3
    assert reloaded["bits_per_dim"] == pytest.approx(float(logged["val/bits_per_dim"]), rel=1e-5)
    assert reloaded["f1_micro"] == pytest.approx(float(logged["val/f1_micro"]), abs=1e-4)


def test_image_token_count_matches_mobilenet() -> None:
    net = MobileNetV2().features.eval()
    with torch.no_grad():
        for size in (33, 64, 100):
            h, w = net(torch.zeros(1, 3, size, size)).shape[-2:]
            assert image_token_count(size) == h * w


@pytest.fixture(scope="module")
def batch(hdf5_root: Path) -> dict:
    task, cfg = load_config(SMOKE, data_dir=hdf5_root)
    return next(iter(eval_loader(task, cfg, "train")))


def _tiny(fusion: str, **kwargs: object) -> GenreClassifier:
    return GenreClassifier(
        len(GENRES),
        64,
        32,
        fusion=fusion,
        dim=8,
        flow={"blocks": 1, "coupling_hidden": 8},
        head_hidden=16,
        **kwargs,
    )


def test_aligned_baselines_refuse_the_unequal_token_counts() -> None:
    for fusion in ALIGNED_FUSIONS:  # 4 poster tokens against 32 plot tokens
        with pytest.raises(ConfigError, match="model.fusion: .* equal token counts"):
            _tiny(fusion)


@pytest.mark.parametrize("fusion", [f for f in FUSIONS if f not in ALIGNED_FUSIONS])
def test_every_fusion_mode_builds_and_runs(fusion: str, batch: dict) -> None:
    torch.manual_seed(0)
    model = _tiny(fusion).eval()
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (4, len(GENRES)) and torch.isfinite(out.logits).all()
    if fusion == "mango":
        assert out.bits_per_dim is not None and out.bits_per_dim.shape == (4,)
    else:
        assert out.bits_per_dim is None
    if fusion in BASELINE_FUSIONS:  # sized to the flow of the same settings
        assert model.fusion.budget is not None
        flow = _tiny("mango").fusion.parameter_count()
        assert abs(model.fusion.parameter_count() / flow - 1) <= 0.1
    assert model.backbone_parameters() == []
    assert {name.split(".")[0] for name, _ in model.named_parameters()} <= {
        "embed",
        "fusion",
        "head",
        "heads",
    }
    if fusion in ("image", "text"):  # the other modality is never read
        other = "text" if fusion == "image" else "image"
        with torch.no_grad():
            changed = model({**batch, other: None})
        torch.testing.assert_close(changed.logits, out.logits)


def test_late_fusion_averages_the_per_modality_heads(batch: dict) -> None:
    model = _tiny("late").eval()
    with torch.no_grad():
        out = model(batch)
        image, _ = model._features("image", batch)
        text, mask = model._features("text", batch)
        image_logits = model.heads["image"](model.embed["image"](image).mean(1))
        text_tokens = model.embed["text"](text)
        pooled = (text_tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        text_logits = model.heads["text"](pooled)
    torch.testing.assert_close(out.logits, (image_logits + text_logits) / 2)


def test_frozen_encoders_get_no_gradient_and_follow_dtype(batch: dict) -> None:
    model = _tiny("concat").train()
    loss = model(batch).logits.sum()
    loss.backward()
    assert all(p.grad is None for p in model.encoder("image").parameters())
    assert all(p.grad is None for p in model.encoder("text").parameters())
    assert all(p.grad is not None for p in model.head_parameters())
    model.double()
    assert next(model.encoder("image").parameters()).dtype == torch.float64
    with torch.no_grad():
        out = model({**batch, "image": batch["image"].double()})
    assert out.logits.dtype == torch.float64


def test_trainable_image_encoder_is_saved_and_trained(batch: dict) -> None:
    model = _tiny("image", train_image_encoder=True).train()
    assert any(key.startswith("encoders.image.") for key in model.state_dict())
    backbone = model.backbone_parameters()
    assert backbone and all(p.requires_grad for p in backbone)
    model(batch).logits.sum().backward()
    assert all(p.grad is not None for p in backbone)
    frozen = _tiny("image")
    assert not any(key.startswith("encoders.") for key in frozen.state_dict())


def test_balanced_class_weights_enter_the_loss(hdf5_root: Path, batch: dict) -> None:
    task, cfg = load_config(
        SMOKE, ["model.class_weights=balanced", "model.fusion=image"], hdf5_root
    )
    assert isinstance(task, MMIMDbTask)
    task.build_model(cfg)
    labels = task.dataset(cfg, "train").label_matrix()  # 6 movies
    positives = labels.sum(0)
    expected_weight = np.where(positives > 0, (6 - positives) / np.maximum(positives, 1), 1.0)
    torch.testing.assert_close(task.pos_weight(), torch.tensor(expected_weight).float())
    # logits 0: every element costs log 2, times pos_weight_j for a positive
    y = batch["labels"].numpy()
    expected = float(np.mean(math.log(2) * np.where(y > 0, expected_weight, 1.0)))
    loss = task.loss(ClassificationOutput(torch.zeros(4, len(GENRES))), batch)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_balanced_pos_weight_by_hand() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    torch.testing.assert_close(balanced_pos_weight(labels), torch.tensor([1 / 3, 3.0, 3.0]))


def test_check_data_reports_a_folder_without_data(tmp_path: Path) -> None:
    report = MMIMDbTask().check_data(tmp_path)
    assert not report.ok and len(report.errors) == 1 and "no MM-IMDb data" in report.errors[0]


@pytest.mark.parametrize("command", ["train", "check"])
def test_bad_data_dir_gives_one_line_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    if command == "train":
        args = ["train", "--config", str(SMOKE), "--data", str(empty), "--out", str(tmp_path / "r")]
    else:
        args = ["data", "check", "--layout", "mmimdb", "--data", str(empty)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert "no MM-IMDb data" in err and str(empty) in err
    if command == "train":
        assert len(err.splitlines()) == 1 and err.startswith("mango: error:")
        assert not (tmp_path / "r" / "checkpoints").exists()


def test_dev_tuned_threshold_is_chosen_on_dev_and_recorded(tmp_path: Path, hdf5_root: Path) -> None:
    """`--set model.tune_threshold=true`: the threshold comes from the dev split, is recorded, and
    equals the grid-best micro-F1 threshold on dev; test scores use it."""
    from mango.tasks.mmimdb.metrics import tune_threshold
    from mango.train.run import load_trained

    run = tmp_path / "run"
    args = ["--config", str(SMOKE), "--data", str(hdf5_root), "--out", str(run)]
    assert main(["train", *args, "--max-steps", "4"]) == 0
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "tuned.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                checkpoint,
                "--out",
                str(out),
                "--set",
                "model.tune_threshold=true",
            ]
        )
        == 0
    )
    tuned = json.loads(out.read_text())
    assert tuned["threshold_source"] == "dev"
    task, cfg, model = load_trained(checkpoint)
    dev = task.dataset(cfg, "val")
    transform = task.transform(cfg, train=False)
    batch = torch.utils.data.default_collate([transform(dev[i], None) for i in range(len(dev))])
    with torch.no_grad():
        probs = model(batch).logits.sigmoid()
    assert tuned["threshold"] == pytest.approx(tune_threshold(probs, batch["labels"]))
    plain = tmp_path / "plain.json"
    assert main(["eval", "--checkpoint", checkpoint, "--out", str(plain)]) == 0
    assert json.loads(plain.read_text())["threshold"] == 0.5


@pytest.mark.parametrize(("missing", "fill"), [("text", "impute"), ("image", "zero")])
def test_eval_with_poster_or_plot_absent(
    run: Path, tmp_path: Path, missing: str, fill: str
) -> None:
    out = tmp_path / "m.json"
    flags = ["--missing", missing, "--missing-rate", "0.5", "--fill", fill, "--out", str(out)]
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), *flags]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["missing"] == [missing] and metrics["missing_rate"] == 0.5
    assert 0.0 <= metrics["f1_macro"] <= 100.0
    assert metrics.get("impute_samples", 0) == (2 if fill == "impute" else 0)
