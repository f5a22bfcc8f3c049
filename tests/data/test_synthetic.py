"""Synthetic RGB-D scenes: contract, determinism, disjoint splits, speed, and the fusion premise."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import uniform_filter
from sklearn.linear_model import LogisticRegression

from mango.data import (
    CLASS_NAMES,
    NUM_CLASSES,
    SyntheticScenes,
    display_depth,
    display_rgb,
    generate_scene,
    rgb_alone_miou_bound,
)
from mango.errors import ConfigError


def _digest(sample: dict) -> str:
    h = hashlib.sha256()
    for key in ("rgb", "depth", "mask"):
        h.update(sample[key].numpy().tobytes())
    return h.hexdigest()


def test_class_names() -> None:
    assert CLASS_NAMES == ("background", "warm dome", "warm pit", "cool dome", "cool pit")
    assert NUM_CLASSES == 5


@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(16, 48),
    index=st.integers(0, 9),
    split=st.sampled_from(["train", "val", "test"]),
    seed=st.integers(0, 2**31),
)
def test_item_contract(size: int, index: int, split: str, seed: int) -> None:
    sample = SyntheticScenes(10, split=split, size=size, seed=seed)[index]
    assert set(sample) == {"rgb", "depth", "mask", "index"}
    assert sample["rgb"].shape == (3, size, size) and sample["rgb"].dtype == torch.float32
    assert sample["depth"].shape == (1, size, size) and sample["depth"].dtype == torch.float32
    assert sample["mask"].shape == (size, size) and sample["mask"].dtype == torch.int64
    assert sample["index"] == index
    assert 0 <= int(sample["mask"].min()) and int(sample["mask"].max()) < NUM_CLASSES
    assert (sample["mask"] > 0).any()  # at least one object survives occlusion
    # rgb in [0, 1] maps to [-2, 2]; depth of 2-4 m maps to about [-2, 2]
    assert sample["rgb"].abs().max() <= 2.0 + 1e-6
    assert sample["depth"].abs().max() < 3.0


def test_normalisation_statistics() -> None:
    scenes = SyntheticScenes(100, size=32)
    rgb = torch.stack([scenes[i]["rgb"] for i in range(100)])
    depth = torch.stack([scenes[i]["depth"] for i in range(100)])
    assert abs(float(rgb.mean())) < 0.3 and 0.5 < float(rgb.std()) < 1.5
    assert abs(float(depth.mean())) < 0.3 and 0.4 < float(depth.std()) < 1.5


def test_deterministic_and_seeded() -> None:
    a, b = SyntheticScenes(5, "val", 32, seed=3), SyntheticScenes(5, "val", 32, seed=3)
    for i in range(5):
        assert _digest(a[i]) == _digest(b[i])
    assert _digest(a[-1]) == _digest(a[4])
    other_seed = SyntheticScenes(5, "val", 32, seed=4)
    assert all(_digest(a[i]) != _digest(other_seed[i]) for i in range(5))


def test_splits_are_disjoint() -> None:
    digests = {
        split: {_digest(SyntheticScenes(60, split, 24)[i]) for i in range(60)}
        for split in ("train", "val", "test")
    }
    assert all(len(d) == 60 for d in digests.values())  # no repeats inside a split either
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_object_classes_are_balanced() -> None:
    scenes = SyntheticScenes(300, size=32)
    counts = np.bincount(
        np.concatenate([scenes[i]["mask"].numpy().ravel() for i in range(300)]), minlength=5
    )
    share = counts / counts.sum()
    assert 0.5 < share[0] < 0.85  # background
    assert np.all(np.abs(share[1:] / share[1:].mean() - 1) < 0.2)


def test_no_cross_modal_leak_in_summary_statistics() -> None:
    """Dome and pit share colour statistics; warm and cool share relief statistics."""
    scenes = SyntheticScenes(300, size=32)
    colour: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 5)}
    relief: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 5)}
    for i in range(300):
        s = scenes[i]
        rgb, depth, mask = display_rgb(s["rgb"]), s["depth"][0].numpy(), s["mask"].numpy()
        local = depth - uniform_filter(depth, 15, mode="nearest")
        for c in range(1, 5):
            colour[c].append(rgb[mask == c])
            relief[c].append(local[mask == c])
    mean_colour = {c: np.concatenate(v).mean(0) for c, v in colour.items()}
    mean_relief = {c: float(np.concatenate(v).mean()) for c, v in relief.items()}
    # same colour family, different shape: same mean colour; different families: far apart
    assert np.abs(mean_colour[1] - mean_colour[2]).max() < 0.03
    assert np.abs(mean_colour[3] - mean_colour[4]).max() < 0.03
    assert np.abs(mean_colour[1] - mean_colour[3]).max() > 0.3
    # same shape, different colour: same relief; domes are nearer (negative), pits farther
    assert abs(mean_relief[1] - mean_relief[3]) < 0.04
    assert abs(mean_relief[2] - mean_relief[4]) < 0.04
    assert mean_relief[1] < -0.1 and mean_relief[2] > 0.1


def _features(sample: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel local features: colour (raw, 3x3 mean) and depth relative to 4 neighbourhoods."""
    rgb, depth = sample["rgb"].numpy(), sample["depth"][0].numpy()
    f_rgb = [rgb[c] for c in range(3)] + [uniform_filter(rgb[c], 3) for c in range(3)]
    f_depth = [depth - uniform_filter(depth, k, mode="nearest") for k in (5, 11, 21, 31)]
    return (
        np.stack(f_rgb, -1).reshape(-1, 6),
        np.stack(f_depth, -1).reshape(-1, 4),
        sample["mask"].numpy().ravel(),
    )


def _pixels(split: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scenes = SyntheticScenes(n, split=split, size=32)
    rgb, depth, mask = zip(*(_features(scenes[i]) for i in range(n)), strict=True)
    return np.concatenate(rgb), np.concatenate(depth), np.concatenate(mask)


def _miou(pred: np.ndarray, target: np.ndarray) -> float:
    confusion = np.bincount(target * NUM_CLASSES + pred, minlength=NUM_CLASSES**2)
    confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float((inter / np.maximum(union, 1)).mean())


def test_oracle_needs_both_modalities() -> None:
    """A per-pixel logistic regression on local features: rgb + depth >> either one alone.

    Ideal single-modality classifiers reach about (1 + 2 * 1/2) / 5 = 0.4 mIoU (background right,
    each object pixel confused between the two classes that share its cue).
    """
    rgb_tr, depth_tr, y_tr = _pixels("train", 60)
    rgb_te, depth_te, y_te = _pixels("test", 30)
    pick = np.random.default_rng(0).choice(len(y_tr), 15000, replace=False)
    inputs = {
        "rgb": (rgb_tr, rgb_te),
        "depth": (depth_tr, depth_te),
        "both": (np.hstack([rgb_tr, depth_tr]), np.hstack([rgb_te, depth_te])),
    }
    scores, predictions = {}, {}
    for name, (train, test) in inputs.items():
        classifier = LogisticRegression(max_iter=300).fit(train[pick], y_tr[pick])
        predictions[name] = classifier.predict(test)
        scores[name] = _miou(predictions[name], y_te)
    assert scores["both"] > 0.85, scores
    assert scores["rgb"] < 0.55 and scores["depth"] < 0.55, scores
    assert scores["both"] - max(scores["rgb"], scores["depth"]) > 0.3, scores
    # rgb alone finds the colour family but guesses the shape: within warm objects,
    # dome vs pit is at chance; depth alone finds the shape but guesses the colour.
    warm = (y_te == 1) | (y_te == 2)
    warm_hit = np.isin(predictions["rgb"][warm], (1, 2)).mean()
    shape_right = (predictions["rgb"][warm] == y_te[warm]).mean()
    assert warm_hit > 0.9 and 0.3 < shape_right < 0.7
    dome = (y_te == 1) | (y_te == 3)
    dome_hit = np.isin(predictions["depth"][dome], (1, 3)).mean()
    colour_right = (predictions["depth"][dome] == y_te[dome]).mean()
    assert dome_hit > 0.7 and 0.3 < colour_right < 0.7


def test_generation_is_fast() -> None:
    scenes = SyntheticScenes(1000, size=64)
    started = time.perf_counter()
    for i in range(1000):
        scenes[i]
    assert time.perf_counter() - started < 2.0


def test_display_round_trip() -> None:
    scenes = SyntheticScenes(3, "test", 32, seed=7)
    raw = generate_scene(32, scenes.generator(2))
    sample = scenes[2]
    np.testing.assert_allclose(display_rgb(sample["rgb"]), raw["rgb"], atol=1e-6)
    np.testing.assert_array_equal(sample["mask"].numpy(), raw["mask"])
    shown = display_depth(sample["depth"])
    assert shown.shape == (32, 32) and shown.min() == 0.0 and shown.max() == 1.0
    expected = (raw["depth"] - raw["depth"].min()) / (raw["depth"].max() - raw["depth"].min())
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    assert display_depth(np.full((4, 4), 2.0)).tolist() == np.zeros((4, 4)).tolist()


def test_dataloader_batches() -> None:
    loader = torch.utils.data.DataLoader(SyntheticScenes(6, size=16), batch_size=4)
    batch = next(iter(loader))
    assert batch["rgb"].shape == (4, 3, 16, 16) and batch["index"].tolist() == [0, 1, 2, 3]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="split"):
        SyntheticScenes(3, split="dev")
    with pytest.raises(ConfigError, match="size"):
        SyntheticScenes(3, size=8)
    with pytest.raises(ConfigError, match="scenes"):
        SyntheticScenes(-1)
    with pytest.raises(IndexError):
        SyntheticScenes(3)[3]
    with pytest.raises(IndexError):
        SyntheticScenes(3)[-4]


def _coin_miou(masks: np.ndarray, p_dome: float, rng: np.random.Generator) -> float:
    """mIoU (%) of an RGB-only prediction: background and family exact, each connected object
    region of a family called dome with probability ``p_dome``, whatever its relief."""
    from scipy.ndimage import label

    pred = np.zeros_like(masks)
    for scene, truth in zip(pred, masks, strict=True):
        for family in (0, 1):
            regions, count = label((truth == 1 + 2 * family) | (truth == 2 + 2 * family))
            pit = rng.random(count + 1) >= p_dome
            inside = regions > 0
            scene[inside] = 1 + 2 * family + pit[regions[inside]]
    ious = [
        ((pred == c) & (masks == c)).sum() / ((pred == c) | (masks == c)).sum()
        for c in range(NUM_CLASSES)
    ]
    return 100.0 * float(np.mean(ious))


def test_rgb_alone_bound_holds_for_rgb_only_predictions() -> None:
    """No prediction blind to the relief beats the bound on average; the truth is far above it."""
    scenes = SyntheticScenes(150, split="test", size=32, misregistration=0.125)
    masks = np.stack([scenes[i]["mask"].numpy() for i in range(len(scenes))])
    bound = rgb_alone_miou_bound(masks)
    assert 45.0 < bound < 48.5  # (1 + 4/3) / 5 for equal dome and pit areas
    rng = np.random.default_rng(0)
    for p_dome in (0.2, 0.5, 0.8):
        mean = np.mean([_coin_miou(masks, p_dome, rng) for _ in range(40)])
        assert mean < bound + 0.5, (p_dome, mean, bound)
    assert np.mean([_coin_miou(masks, 0.5, rng) for _ in range(40)]) > bound - 1.5
    with pytest.raises(ValueError, match="cool pit"):
        rgb_alone_miou_bound(np.where(masks == 4, 3, masks))


# ---------------------------------------------------------------- shading (data.shading)


@pytest.mark.parametrize("misregistration", [0.0, 0.125])
def test_zero_shading_is_the_unshaded_generator_bit_for_bit(misregistration: float) -> None:
    for seed in range(6):
        plain_rng, shaded_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        plain = generate_scene(32, plain_rng, misregistration)
        zero = generate_scene(32, shaded_rng, misregistration, shading=0.0)
        for key in ("rgb", "depth", "mask", "shift"):
            assert zero[key].tobytes() == plain[key].tobytes(), key
        assert plain_rng.bit_generator.state == shaded_rng.bit_generator.state
    default = SyntheticScenes(4, split="val", size=32, misregistration=misregistration)
    zero_scenes = SyntheticScenes(4, "val", 32, misregistration=misregistration, shading=0.0)
    assert [_digest(default[i]) for i in range(4)] == [_digest(zero_scenes[i]) for i in range(4)]


def test_shading_changes_only_the_rgb_image_and_draws_nothing() -> None:
    for seed in range(4):
        plain_rng, shaded_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        plain = generate_scene(32, plain_rng, 0.125)
        shaded = generate_scene(32, shaded_rng, 0.125, shading=0.5)
        for key in ("depth", "mask", "shift"):
            assert np.array_equal(shaded[key], plain[key]), key
        assert not np.array_equal(shaded["rgb"], plain["rgb"])
        assert plain_rng.bit_generator.state == shaded_rng.bit_generator.state


def test_a_light_from_the_left_lights_domes_on_the_left_and_pits_on_the_right() -> None:
    """Over each object, the brightness the light adds (shaded − unshaded, same draws) is larger
    on the left half of a dome and on the right half of a pit."""
    votes: dict[str, list[bool]] = {"dome": [], "pit": []}
    for seed in range(40):
        plain = generate_scene(64, np.random.default_rng(seed))
        shaded = generate_scene(64, np.random.default_rng(seed), shading=0.5)
        added = (shaded["rgb"] - plain["rgb"]).mean(-1)
        for class_id in range(1, NUM_CLASSES):
            rows, cols = np.nonzero(plain["mask"] == class_id)
            if len(cols) < 40:
                continue
            left = cols < np.median(cols)
            brighter_left = (
                added[rows[left], cols[left]].mean() > added[rows[~left], cols[~left]].mean()
            )
            votes["dome" if "dome" in CLASS_NAMES[class_id] else "pit"].append(bool(brighter_left))
    assert min(len(v) for v in votes.values()) >= 20
    assert np.mean(votes["dome"]) > 0.85 and np.mean(votes["pit"]) < 0.15


def _flank_rule_accuracy(shading: float, scenes: int = 100) -> float:
    """Share of test objects (visible parts of ≥ 20 px) whose dome or pit the rule "the left
    half is brighter than the right half → dome" gets right, from the RGB image as a model sees
    it (albedo, pixel noise, misregistered depth) and the true object mask."""
    from scipy.ndimage import label

    data = SyntheticScenes(scenes, "test", 64, misregistration=0.125, shading=shading)
    right = []
    for index in range(scenes):
        scene = generate_scene(64, data.generator(index), 0.125, shading)
        value = scene["rgb"].max(-1)  # HSV value: the shade scales it, hue stays
        for class_id in range(1, NUM_CLASSES):
            parts, count = label(scene["mask"] == class_id)
            for part in range(1, count + 1):
                rows, cols = np.nonzero(parts == part)
                if len(cols) < 20:
                    continue
                left = cols < cols.mean()
                brighter = (
                    value[rows[left], cols[left]].mean() > value[rows[~left], cols[~left]].mean()
                )
                right.append(brighter == ("dome" in CLASS_NAMES[class_id]))
    return float(np.mean(right))


def test_the_shading_cue_is_readable_from_the_rgb_image_alone() -> None:
    """At the study's s = 0.5 a per-object rule on the observed RGB tells dome from pit (98 % of
    300 test scenes' objects; docs/density.md); without shading it is a coin toss (52 %)."""
    assert _flank_rule_accuracy(0.5) > 0.9
    assert 0.35 < _flank_rule_accuracy(0.0) < 0.65


def test_lambert_shade_of_a_flat_and_a_tilted_surface() -> None:
    from mango.data.synthetic import lambert_shade

    flat = np.full((16, 16), 3.0, dtype=np.float32)
    assert np.allclose(lambert_shade(flat), 1.0)
    # depth falling by 1 m per metre to the right: the surface faces 45° left, straight at the light
    x = (np.arange(16) + 0.5) * (2.0 / 16)
    facing = (3.0 - x)[None].repeat(16, 0)
    assert np.allclose(lambert_shade(facing), np.sqrt(2))  # n·l = 1, over n₀·l = cos 45°
    assert np.allclose(lambert_shade(facing[:, ::-1]), 0.0)  # faces 45° right: n·l = 0


def test_shading_is_a_validated_config_field() -> None:
    from mango.config import validate
    from mango.demo.spec import DEMO_CONFIG
    from mango.tasks.rgbd.config import SyntheticConfig

    assert validate(SyntheticConfig, DEMO_CONFIG, "demo").data.shading == 0.0
    raw = {**DEMO_CONFIG, "data": {**DEMO_CONFIG["data"], "shading": 1.5}}
    with pytest.raises(ConfigError) as caught:
        validate(SyntheticConfig, raw, "x.yaml")
    assert "field data.shading" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="data.shading"):
        SyntheticScenes(1, shading=-0.1)
