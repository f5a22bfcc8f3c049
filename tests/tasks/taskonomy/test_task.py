"""Taskonomy translation end to end: train -> eval -> predict through the CLI on the fixture,
pair / inputs resolution and conflicts, old folder names, fusion modes, the L1 and GAN losses."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mango.cli import main
from mango.errors import ConfigError
from mango.models.fusion import ALIGNED_FUSIONS
from mango.models.translation import FUSIONS, TranslationModel, TranslationOutput
from mango.tasks.taskonomy.config import PAIRS
from mango.tasks.taskonomy.task import TaskonomyTask
from mango.train.run import load_config

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "configs" / "taskonomy-smoke.yaml"
RECIPE = ROOT / "configs" / "taskonomy.yaml"
TEST_NAMES = ["point_4_view_1", "point_5_view_2", "point_6_view_0"]  # the fixture's val list


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is as fast


@pytest.fixture(scope="module")
def run(taskonomy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-step smoke run, then eval on test and predict (all via the CLI, in-process)."""
    out = tmp_path_factory.mktemp("run")
    checkpoint = str(out / "checkpoints" / "last.ckpt")
    assert (
        main(
            [
                "train",
                "--config",
                str(SMOKE),
                "--data",
                str(taskonomy_root),
                "--out",
                str(out),
                "--max-steps",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(["eval", "--checkpoint", checkpoint, "--split", "test", "--out", str(out / "m.json")])
        == 0
    )
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                "--data",
                str(taskonomy_root),
                "--out",
                str(out / "pred"),
            ]
        )
        == 0
    )
    return out


def test_eval_writes_translation_metrics(run: Path) -> None:
    metrics = json.loads((run / "m.json").read_text())
    for key in ("mae", "mse", "psnr", "ssim", "fid_mobilenet", "kid_mobilenet", "bits_per_dim"):
        assert np.isfinite(metrics[key]), key
    assert "fid" not in metrics  # no Inception weights given: only the labelled stand-in
    assert metrics["samples"] == 3 and metrics["split"] == "test"
    assert 0 < metrics["mae"] <= 20 and 0 < metrics["mse"] <= 40  # x10, images in [-1, 1]
    assert -1 <= metrics["ssim"] <= 1


def test_predict_writes_input_target_output_grids(run: Path, taskonomy_root: Path) -> None:
    paths = sorted((run / "pred").glob("*.png"))
    assert [p.stem for p in paths] == TEST_NAMES
    metrics = json.loads((run / "m.json").read_text())
    abs_errors = []
    for path in paths:
        grid = np.asarray(Image.open(path))
        assert grid.shape == (32, 4 * 32, 3)  # shade | texture | target | output
        # 8-bit domains survive the [-1, 1] round trip exactly: the panels are the files
        shade_file = taskonomy_root / "reshading" / f"{path.stem}_domain_reshading.png"
        shade = np.asarray(Image.open(shade_file))
        rgb = np.asarray(Image.open(taskonomy_root / "rgb" / f"{path.stem}_domain_rgb.png"))
        np.testing.assert_array_equal(grid[:, :32], np.repeat(shade[..., None], 3, axis=2))
        np.testing.assert_array_equal(grid[:, 64:96], rgb)
        output = grid[:, 96:].astype(np.float64) / 127.5 - 1
        abs_errors.append(np.abs(output - (rgb / 127.5 - 1)))
    # eval's MAE (x10) from the PNGs, up to their 8-bit rounding (<= 0.5/127.5 per value)
    assert 10 * np.mean(abs_errors) == pytest.approx(metrics["mae"], abs=10 * 0.5 / 127.5)


def test_training_reduces_the_l1_loss(run: Path) -> None:
    with next((run / "logs").glob("version_*/metrics.csv")).open() as f:
        losses = [float(r["train/task_loss"]) for r in csv.DictReader(f) if r["train/task_loss"]]
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_old_folder_names_train(old_root: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "train",
                "--config",
                str(SMOKE),
                "--data",
                str(old_root),
                "--out",
                str(tmp_path),
                "--max-steps",
                "2",
                "--set",
                "trainer.steps_per_checkpoint=2",
            ]
        )
        == 0
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("pair", list(PAIRS))
def test_pairs_resolve_to_canonical_domains(pair: str) -> None:
    expected = {
        "shade_texture_to_rgb": (["reshading", "edge_texture"], "rgb"),
        "depth_normal_to_rgb": (["depth_zbuffer", "normal"], "rgb"),
        "rgb_shade_to_normal": (["rgb", "reshading"], "normal"),
        "rgb_normal_to_shade": (["rgb", "normal"], "reshading"),
        "rgb_edge_to_depth": (["rgb", "edge_occlusion"], "depth_zbuffer"),
    }[pair]
    _, cfg = load_config(SMOKE, [f"data.pair={pair}"])
    assert (cfg.data.inputs, cfg.data.target) == expected
    # agreeing explicit fields (short names) are accepted
    inputs, target = PAIRS[pair]
    _, cfg = load_config(
        SMOKE, [f"data.pair={pair}", f"data.inputs=[{','.join(inputs)}]", f"data.target={target}"]
    )
    assert (cfg.data.inputs, cfg.data.target) == expected


def test_explicit_inputs_without_pair_and_recipe_config() -> None:
    _, cfg = load_config(
        SMOKE, ["data.pair=null", "data.inputs=[depth, normal, edge2d]", "data.target=rgb"]
    )
    assert cfg.data.inputs == ["depth_zbuffer", "normal", "edge_texture"]
    _, recipe = load_config(RECIPE)
    assert recipe.data.crop_size == 256 and recipe.flow.blocks == 12
    assert recipe.optim.lr == 2e-4 and recipe.optim.betas == (0.5, 0.999)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["data.inputs=[rgb, shade]"], "data.inputs"),
        (["data.target=normal"], "data.target"),
        (["data.pair=null"], "data.inputs / data.target"),
        (["data.pair=null", "data.inputs=[rgb, normal]", "data.target=rgb"], "data.target"),
        (
            ["data.inputs=[shade, texture, shade]", "data.pair=null", "data.target=rgb"],
            "data.inputs",
        ),
        (["data.pair=null", "data.inputs=[rgb, sky]", "data.target=normal"], "data.inputs"),
        (["data.pair=rgb_to_everything"], "data.pair"),
    ],
)
def test_config_conflicts_are_one_line_errors(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(SMOKE, overrides)
    message = str(error.value)
    assert "\n" not in message and field in message and "taskonomy-smoke.yaml" in message


def _batch(inputs: list[str], size: int = 32, n: int = 2) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = {d: torch.rand(n, 3, size, size, generator=generator) * 2 - 1 for d in inputs}
    batch["target"] = torch.rand(n, 3, size, size, generator=generator) * 2 - 1
    return batch


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_modes_build_and_translate(fusion: str) -> None:
    two_only = fusion in ALIGNED_FUSIONS  # TokenFusion, GeminiFusion and CMX fuse two streams
    inputs = ["reshading", "edge_texture"] + ([] if two_only else ["normal"])
    model = TranslationModel(
        inputs,
        32,
        fusion=fusion,
        dim=8,
        encoder_widths=(8, 8, 8),
        decoder_width=8,
        flow={"blocks": 1, "coupling_hidden": 8},
    )
    out = model(_batch(inputs))
    assert out.image.shape == (2, 3, 32, 32) and out.image.abs().max() <= 1
    assert (out.bits_per_dim is not None) == (fusion == "mango")
    assert (out.aux_loss is not None) == (fusion == "tokenfusion")
    assert list(model.encoders) == (inputs[:1] if fusion == "single" else inputs)
    names = {id(p) for p in model.backbone_parameters()} | {id(p) for p in model.head_parameters()}
    assert names == {id(p) for p in model.parameters()}


def test_model_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="model.fusion"):
        TranslationModel(["rgb"], 32, fusion="mango", encoder_widths=(8,))
    with pytest.raises(ConfigError, match="data.crop_size"):
        TranslationModel(["rgb", "normal"], 36, encoder_widths=(8, 8, 8))
    with pytest.raises(ConfigError, match="model.encoder_widths"):
        TranslationModel(["rgb", "normal"], 8, encoder_widths=(8, 8, 8))


def test_l1_loss_is_weighted_mean_absolute_error(taskonomy_root: Path) -> None:
    task = TaskonomyTask()
    _, cfg = load_config(SMOKE, ["loss.l1_weight=100"], taskonomy_root)
    task.build_model(cfg)
    batch = {"target": torch.full((2, 3, 4, 4), 0.5)}
    image = torch.zeros(2, 3, 4, 4)
    image[0] = 1.0  # |1 - 0.5| = 0.5 on half the values, |0 - 0.5| = 0.5 on the rest
    image[1, 0] = -0.5  # |-0.5 - 0.5| = 1 on 1/6 of the values
    expected = 100 * (0.5 * 5 / 6 + 1.0 / 6)
    assert float(task.loss(TranslationOutput(image), batch)) == pytest.approx(expected)


def test_gan_losses_reach_only_their_own_player() -> None:
    inputs = ["rgb", "normal"]
    model = TranslationModel(
        inputs,
        32,
        dim=8,
        encoder_widths=(8, 8, 8),
        decoder_width=8,
        flow={"blocks": 1, "coupling_hidden": 8},
        gan={"ndf": 4, "layers": 2},
    )
    batch = _batch(inputs)
    out = model(batch)
    generator_loss, discriminator_loss = model.adversarial_losses(batch, out.image)
    d_params = list(model.discriminator.parameters())
    g_params = list(model.decoder.parameters())
    grads = torch.autograd.grad(generator_loss, d_params + g_params, allow_unused=True)
    assert all(g is None for g in grads[: len(d_params)])
    assert any(g is not None and g.abs().sum() > 0 for g in grads[len(d_params) :])
    grads = torch.autograd.grad(discriminator_loss, d_params + g_params, allow_unused=True)
    assert all(g is not None for g in grads[: len(d_params)])
    assert all(g is None for g in grads[len(d_params) :])
    # at init D outputs logits near 0: both BCE terms near log 2
    assert float(discriminator_loss.detach()) == pytest.approx(np.log(2), abs=0.3)


@pytest.mark.parametrize("fill", ["zero", "impute"])
def test_eval_with_an_input_domain_absent(run: Path, tmp_path: Path, fill: str) -> None:
    out = tmp_path / "m.json"
    flags = ["--missing", "reshading", "--fill", fill, "--out", str(out)]
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), *flags]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["missing"] == ["reshading"] and metrics["fill"] == fill
    assert math.isfinite(metrics["mae"])
    assert ("impute_samples" in metrics) == (fill == "impute")
