"""MiT encoders: shapes, gradients, variant sizes, and loading of HF and NVlabs checkpoints."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers import SegformerConfig, SegformerForImageClassification

from mango.errors import CheckpointError, ConfigError
from mango.models.encoders.mit import MIT_VARIANTS, MiTEncoder, load_mit_weights


def _encoder(variant: str = "tiny", seed: int = 0, **kwargs) -> MiTEncoder:
    torch.manual_seed(seed)
    return MiTEncoder(variant, drop_path_rate=0.0, **kwargs).eval()


def _save_hf_folder(encoder: MiTEncoder, folder: Path) -> Path:
    encoder.model.save_pretrained(folder)
    return folder


def _hf_to_nvlabs(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the loader's mapping, written independently: HF on-disk keys -> mit_bX.pth."""
    block_parts = {
        "layer_norm_1": "norm1",
        "attention.self.query": "attn.q",
        "attention.self.sr": "attn.sr",
        "attention.self.layer_norm": "attn.norm",
        "attention.output.dense": "attn.proj",
        "layer_norm_2": "norm2",
        "mlp.dense1": "mlp.fc1",
        "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
        "mlp.dense2": "mlp.fc2",
    }
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf.items():
        parts = key.split(".")
        param = parts[-1]
        if parts[1] == "patch_embeddings":
            module = {"proj": "proj", "layer_norm": "norm"}[parts[3]]
            out[f"patch_embed{int(parts[2]) + 1}.{module}.{param}"] = tensor
        elif parts[1] == "layer_norm":
            out[f"norm{int(parts[2]) + 1}.{param}"] = tensor
        else:
            prefix = f"block{int(parts[2]) + 1}.{parts[3]}"
            module = ".".join(parts[4:-1])
            if module == "attention.self.key":
                value = hf[key.replace(".key.", ".value.")]
                out[f"{prefix}.attn.kv.{param}"] = torch.cat([tensor, value], dim=0)
            elif module != "attention.self.value":
                out[f"{prefix}.{block_parts[module]}.{param}"] = tensor
    return out


def test_variant_table_matches_the_paper() -> None:
    assert MIT_VARIANTS["b0"]["hidden_sizes"] == [32, 64, 160, 256]
    assert MIT_VARIANTS["b3"]["depths"] == [3, 4, 18, 3]
    # Encoder parameter counts of SegFormer Table 1 (millions), counted without allocating.
    expected = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}
    for variant, millions in expected.items():
        with torch.device("meta"):
            encoder = MiTEncoder(variant)
        count = sum(p.numel() for p in encoder.parameters()) / 1e6
        assert abs(count - millions) < 0.1, (variant, count)


@pytest.mark.parametrize(
    ("variant", "channels"), [("tiny", [8, 16, 32, 32]), ("b0", [32, 64, 160, 256])]
)
def test_shapes(variant: str, channels: list[int]) -> None:
    encoder = _encoder(variant)
    assert encoder.out_channels == channels
    features = encoder(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]


@settings(max_examples=5, deadline=None)
@given(height=st.integers(32, 72), width=st.integers(32, 72), channels=st.integers(1, 4))
def test_shapes_for_any_size(height: int, width: int, channels: int) -> None:
    encoder = _encoder(in_channels=channels)
    features = encoder(torch.randn(1, channels, height, width))
    for feature, stride in zip(features, encoder.strides, strict=True):
        assert feature.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    # No stochastic depth: a dropped block would get no gradient by chance.
    encoder = MiTEncoder("tiny", drop_path_rate=0.0).train()
    # 64 pixels: every stage keeps >= 2 key/value tokens (with one, q and k get no gradient).
    features = encoder(torch.randn(2, 3, 64, 64))
    sum(f.square().mean() for f in features).backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_unknown_variant_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="b9"):
        MiTEncoder("b9")


def test_hf_folder_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, target = _encoder(seed=0), _encoder(seed=1)
    folder = _save_hf_folder(source, tmp_path / "mit")
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(source(x)[-1], target(x)[-1])
    with caplog.at_level(logging.INFO, logger="mango.models.encoders.mit"):
        load_mit_weights(target, folder)
    tensors = len(source.model.state_dict())
    assert f"loaded {tensors} tensors" in caplog.text
    for a, b in zip(source(x), target(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # The constructor argument goes through the same loader.
    torch.testing.assert_close(_encoder(seed=2, pretrained=str(folder))(x)[0], source(x)[0])


def test_hf_classification_checkpoint_file(tmp_path: Path) -> None:
    """``nvidia/mit-bX`` style: ``segformer.encoder...`` keys plus a classifier, one file."""
    config = SegformerConfig(num_labels=5, **MIT_VARIANTS["tiny"])
    torch.manual_seed(3)
    classifier = SegformerForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path / "cls")
    state = load_file(tmp_path / "cls" / "model.safetensors")
    assert "classifier.weight" in state
    assert "segformer.encoder.block.0.0.layer_norm_1.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    encoder = _encoder(seed=4, pretrained=str(tmp_path / "pytorch_model.bin"))
    x = torch.randn(1, 3, 32, 32)
    expected = classifier.segformer(pixel_values=x).last_hidden_state
    torch.testing.assert_close(encoder(x)[-1], expected, rtol=0, atol=0)


def test_nvlabs_round_trip(tmp_path: Path) -> None:
    source = _encoder(seed=0)
    _save_hf_folder(source, tmp_path / "hf")
    nvlabs = _hf_to_nvlabs(load_file(tmp_path / "hf" / "model.safetensors"))
    nvlabs["head.weight"] = torch.randn(10, 32)  # ImageNet classifier of mit_bX.pth: ignored
    assert nvlabs["block1.0.attn.kv.weight"].shape == (16, 8)
    torch.save({"state_dict": nvlabs}, tmp_path / "mit_tiny.pth")

    target = _encoder(seed=1, pretrained=str(tmp_path / "mit_tiny.pth"))
    attention, kv = target.model.stages[0].blocks[0].attention, nvlabs["block1.0.attn.kv.weight"]
    torch.testing.assert_close(attention.k_proj.weight, kv[:8])
    torch.testing.assert_close(attention.v_proj.weight, kv[8:])
    x = torch.randn(2, 3, 48, 32)
    for a, b in zip(source(x), target(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_input_channel_adaptation(tmp_path: Path, channels: int) -> None:
    """A grey image repeated over the new channels embeds like (g, g, g) through the RGB model."""
    rgb = _encoder(seed=0)
    folder = _save_hf_folder(rgb, tmp_path / "hf")
    adapted = _encoder(seed=1, in_channels=channels, pretrained=str(folder))
    kernel = adapted.model.stages[0].patch_embeddings.proj.weight
    rgb_kernel = rgb.model.stages[0].patch_embeddings.proj.weight
    torch.testing.assert_close(kernel[:, :1], rgb_kernel.sum(1, keepdim=True) / channels)
    grey = torch.randn(2, 1, 32, 32)
    expected = rgb(grey.repeat(1, 3, 1, 1))
    for a, b in zip(adapted(grey.repeat(1, channels, 1, 1)), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_wrong_variant_names_file_key_and_shapes(tmp_path: Path) -> None:
    folder = _save_hf_folder(_encoder("b0"), tmp_path / "b0")
    with pytest.raises(CheckpointError) as error:
        load_mit_weights(_encoder("tiny"), folder)
    message = str(error.value)
    assert "\n" not in message
    assert str(folder / "model.safetensors") in message
    # safetensors stores keys sorted: this is the first one, 32 channels in b0 and 8 in tiny.
    assert "key 'encoder.block.0.0.attention.output.dense.bias' has shape (32,)" in message
    assert "MiT-tiny expects (8,)" in message


def test_wrong_depth_and_missing_key(tmp_path: Path) -> None:
    state = load_file(_save_hf_folder(_encoder(), tmp_path / "hf") / "model.safetensors")
    extra = dict(state)
    extra["encoder.block.0.1.layer_norm_1.weight"] = torch.ones(8)
    save_file(extra, tmp_path / "deeper.safetensors")
    deeper = r"'encoder\.block\.0\.1\.layer_norm_1\.weight' \(shape \(8,\)\) is not part of"
    with pytest.raises(CheckpointError, match=deeper):
        load_mit_weights(_encoder(), tmp_path / "deeper.safetensors")
    del state["encoder.layer_norm.3.bias"]
    save_file(state, tmp_path / "partial.safetensors")
    partial = r"partial\.safetensors: key 'encoder\.layer_norm\.3\.bias' \(shape \(32,\)\) needed"
    with pytest.raises(CheckpointError, match=partial):
        load_mit_weights(_encoder(), tmp_path / "partial.safetensors")


def test_missing_and_unusable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nowhere.pth: MiT checkpoint not found"):
        MiTEncoder("tiny", pretrained=str(tmp_path / "nowhere.pth"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        load_mit_weights(_encoder(), tmp_path / "empty")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.bin: cannot read checkpoint"):
        load_mit_weights(_encoder(), tmp_path / "junk.bin")
