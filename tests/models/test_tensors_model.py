"""TensorClassifier: any number of array modalities, vector tokenisation, standardisation, and
the fusion modes sharing embeddings and head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mango.errors import ConfigError
from mango.models.tensors import ModalitySpec, Standardize, TensorClassifier, VectorTokens

SPECS = {
    "audio": ModalitySpec((7, 3)),
    "video": ModalitySpec((4, 9)),
    "labs": ModalitySpec((10,), vector_tokens=3),
}


def _batch(size: int = 5) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "inputs": {
            name: torch.randn(size, *spec.shape, generator=generator)
            for name, spec in SPECS.items()
        }
    }


def test_three_modalities_fuse_and_every_parameter_learns() -> None:
    torch.manual_seed(0)
    model = TensorClassifier(SPECS, outputs=6, dim=8, flow={"blocks": 1, "coupling_hidden": 8})
    assert model.fusion.flow.tokens == (7, 4, 3)
    out = model(_batch())
    assert out.logits.shape == (5, 6) and bool(torch.isfinite(out.bits_per_dim).all())
    (out.logits.square().mean() + out.bits_per_dim.mean()).backward()
    trained = [n for n, p in model.named_parameters() if p.grad is None]
    assert not trained, trained
    assert model.backbone_parameters() == [] and len(model.head_parameters()) == len(
        list(model.parameters())
    )


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_baselines_share_embeddings_and_have_no_flow(fusion: str) -> None:
    mango = TensorClassifier(SPECS, outputs=2, dim=8, flow={"blocks": 1})
    other = TensorClassifier(SPECS, outputs=2, dim=8, fusion=fusion)
    embed = {k for k in mango.state_dict() if k.startswith("embed.")}
    assert embed == {k for k in other.state_dict() if k.startswith("embed.")}
    # no flow: only the fill statistics every fusion keeps (the training mean of each modality)
    assert {k for k in other.state_dict() if k.startswith("fusion.")} <= {
        "fusion.filler.mean",
        "fusion.filler.steps",
    }
    assert other(_batch()).bits_per_dim is None


def test_single_uses_only_its_modality() -> None:
    model = TensorClassifier({"video": SPECS["video"]}, outputs=3, dim=8, fusion="single").eval()
    batch = _batch()
    first = model(batch).logits
    batch["inputs"]["audio"] = batch["inputs"]["audio"] + 100.0
    assert torch.equal(model(batch).logits, first)


def test_standardize_fit_and_vector_tokens() -> None:
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4, 3)).astype(np.float32)
    standardize = Standardize.fit(values)
    out = standardize(torch.from_numpy(values)).reshape(-1, 3)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(3), atol=1e-5)
    constant = Standardize.fit(np.ones((5, 2), np.float32))
    assert bool(torch.isfinite(constant(torch.ones(1, 2))).all())
    tokens = VectorTokens(3)(torch.arange(10.0)[None])
    assert tokens.shape == (1, 3, 4) and tokens[0, -1].tolist() == [8.0, 9.0, 0.0, 0.0]
    assert ModalitySpec((10,), 3).token_width == 4 and ModalitySpec((2,), 5).tokens == 2


@pytest.mark.parametrize(
    ("specs", "fusion", "words"),
    [
        ({"a": ModalitySpec((3, 2)), "b": ModalitySpec((4,), 1)}, "mango", "'b' has 1"),
        ({"a": ModalitySpec((3, 2))}, "concat", "needs 2\\+ modalities"),
        (SPECS, "single", "takes one modality"),
        (SPECS, "early", "model.fusion: expected one of"),
    ],
)
def test_bad_model_settings(specs: dict, fusion: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        TensorClassifier(specs, outputs=2, fusion=fusion)


def test_flatten_readout_keeps_what_the_token_mean_loses() -> None:
    """The defect of a mean-pooled read-out: two inputs whose tokens have the same mean (here a
    permutation of the tokens, and a one-feature-per-token modality) are one input to
    ``concat``. Flattened, they are not."""
    specs = {"a": ModalitySpec((6, 1)), "b": ModalitySpec((4, 2))}
    x = {"a": torch.randn(3, 6, 1), "b": torch.randn(3, 4, 2)}
    y = {"a": x["a"].flip(1), "b": x["b"]}  # same token mean, different tokens
    logits = {}
    for readout in ("mean", "flatten"):
        torch.manual_seed(0)
        model = TensorClassifier(specs, outputs=4, fusion="concat", dim=8, readout=readout)
        model.embed["a"].position.data.zero_()  # no position signal: only the mean survives
        model.eval()
        with torch.no_grad():
            logits[readout] = [model({"inputs": batch}).logits for batch in (x, y)]
    torch.testing.assert_close(*logits["mean"])
    assert (logits["flatten"][0] - logits["flatten"][1]).abs().max() > 1e-3
    late = TensorClassifier(specs, outputs=4, fusion="late", dim=8)  # the same head per modality
    assert late.heads["a"].net[1].in_features == 6 * 8 and late.heads["b"].net[1].in_features == 32


def test_noise_control_replaces_the_modality_by_noise_of_its_shape() -> None:
    specs = {"a": ModalitySpec((6, 1)), "b": ModalitySpec((4, 2))}
    torch.manual_seed(0)
    model = TensorClassifier(specs, outputs=4, fusion="concat", dim=8, noise=["b"]).eval()
    x = {"a": torch.randn(3, 6, 1), "b": torch.randn(3, 4, 2)}
    outputs = []
    for b in (x["b"], 100 * torch.ones_like(x["b"])):  # b's values never matter
        torch.manual_seed(1)
        with torch.no_grad():
            outputs.append(model({"inputs": {"a": x["a"], "b": b}}).logits)
    torch.testing.assert_close(*outputs)
    torch.manual_seed(2)  # other noise: other logits
    with torch.no_grad():
        assert (model({"inputs": x}).logits - outputs[0]).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="model.noise: 'c'"):
        TensorClassifier(specs, outputs=4, fusion="concat", dim=8, noise=["c"])
