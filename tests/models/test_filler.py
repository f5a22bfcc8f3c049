"""The fills of absent tokens before any fusion (zero, mean, regress; impute is the flow's) and
the imputer's separation from the task path."""

from __future__ import annotations

import pytest
import torch

from mango.models.fusion import build_fusion
from mango.models.fusion.filler import ModalityFiller, TokenRegressor, attach_imputers
from mango.models.missing import FILLS, fill_problem, filling


def _step(filler: ModalityFiller, tokens: list[torch.Tensor], present=None) -> None:
    """One training forward (autograd on) and the optimizer step's commit."""
    filler.train()
    with torch.enable_grad():
        filler(tokens, present)
    filler.commit()


def test_the_training_mean_is_the_mean_of_present_tokens_over_steps() -> None:
    filler = ModalityFiller(dim=2, tokens=[1, 2])
    a, b = torch.randn(6, 1, 2), torch.randn(6, 2, 2)
    present = torch.tensor([[True, True]] * 3 + [[True, False]] * 3)
    _step(filler, [a, b], present)
    torch.testing.assert_close(filler.means()[0], a.mean(0))
    torch.testing.assert_close(filler.means()[1], b[:3].mean(0))  # absent samples left out
    a2, b2 = torch.randn(4, 1, 2), torch.randn(4, 2, 2)
    _step(filler, [a2, b2])
    torch.testing.assert_close(filler.means()[0], (a.mean(0) + a2.mean(0)) / 2)
    assert filler.steps.tolist() == [2.0, 2.0]
    filler.eval()
    with torch.no_grad():  # evaluation forwards leave the mean alone
        filler([a2 + 5, b2 + 5], None)
    filler.commit()
    torch.testing.assert_close(filler.means()[0], (a.mean(0) + a2.mean(0)) / 2)


def test_the_mean_depends_on_the_global_batch_not_its_split() -> None:
    tokens = [torch.randn(8, 3, 4, dtype=torch.float64), torch.randn(8, 3, 4, dtype=torch.float64)]
    whole, split = ModalityFiller(4, [3, 3]).double(), ModalityFiller(4, [3, 3]).double()
    for _ in range(3):
        _step(whole, tokens)
        split.train()
        with torch.enable_grad():
            split([t[:4] for t in tokens], None)
            split([t[4:] for t in tokens], None)
        split.commit(reduce=lambda x: x)  # what an all-reduce over one process gives
    torch.testing.assert_close(whole.mean, split.mean, rtol=1e-12, atol=1e-12)


def test_mean_fill_replaces_exactly_the_absent_tokens() -> None:
    filler = ModalityFiller(dim=3, tokens=[2, 2])
    _step(filler, [torch.randn(5, 2, 3), torch.randn(5, 2, 3)])
    x = [torch.randn(3, 2, 3), torch.randn(3, 2, 3)]
    present = torch.tensor([[True, False], [False, True], [True, True]])
    filler.eval()
    assert filler(x, present)[0] is x  # zero fill: the tokens as given
    filler.fill = "mean"
    filled, loss = filler(x, present)
    assert loss is None
    torch.testing.assert_close(filled[1][0], filler.means()[1])
    torch.testing.assert_close(filled[0][1], filler.means()[0])
    for m, b in [(0, 0), (1, 1), (0, 2), (1, 2)]:
        assert torch.equal(filled[m][b], x[m][b])


def test_regress_fill_learns_a_dependent_modality_from_detached_tokens() -> None:
    torch.manual_seed(0)
    filler = ModalityFiller(dim=4, tokens=[3, 3])
    filler.add_regressors()
    optimizer = torch.optim.Adam(filler.parameters(), lr=1e-2)
    for _ in range(300):
        a = torch.randn(32, 3, 4, requires_grad=True)
        b = (2 * a + 1).detach()
        filler.train()
        _, loss = filler([a, b], None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        filler.commit()
        assert a.grad is None  # the imputer's loss never reaches the tokens' producers
    a = torch.randn(16, 3, 4)
    b = 2 * a + 1
    absent_b = torch.tensor([[True, False]]).repeat(16, 1)
    filler.eval()
    errors = {}
    for fill in ("zero", "mean", "regress"):
        filler.fill = fill
        with torch.no_grad():
            filled, _ = filler([a, torch.zeros_like(b)], absent_b)
        assert torch.equal(filled[0], a)
        errors[fill] = float((filled[1] - b).pow(2).mean())
    assert errors["regress"] < 0.05 * errors["mean"] < errors["zero"]


def test_an_untrained_regressor_predicts_the_mean() -> None:
    regressor = TokenRegressor(dim=4, sources=6, target=3)
    assert torch.equal(regressor(torch.randn(2, 6, 4)), torch.zeros(2, 3, 4))
    # aligned sources start as the average at the same position
    assert torch.equal(regressor.positions.weight, torch.eye(3).repeat(1, 2) / 2)


@pytest.mark.parametrize("name", ["mango", "concat", "transformer", "cmx"])
def test_every_fusion_fills_before_it_fuses(name: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, 8, [4, 4], grid=(2, 2), flow={"blocks": 1, "coupling_hidden": 8})
    x = [torch.randn(3, 4, 8), torch.randn(3, 4, 8)]
    fusion.train()
    with torch.enable_grad():
        fusion(x)
    fusion.filler.commit()
    fusion.eval()
    present = torch.tensor([[True, False]] * 3)
    seen = []
    fuse = fusion.fuse

    def spy(tokens, present, with_nll):
        seen.append(tokens)
        return fuse(tokens, present, with_nll)

    fusion.fuse = spy  # type: ignore[method-assign]
    with filling(fusion, "mean"), torch.no_grad():
        fusion(x, present=present)
    torch.testing.assert_close(seen[0][1], fusion.filler.means()[1].expand(3, 4, 8))
    assert torch.equal(seen[0][0], x[0])


def _segmentation_model(fusion: str, imputer: bool):
    from mango.models.segmentation import SegmentationFusionModel

    torch.manual_seed(0)
    model = SegmentationFusionModel(
        ["rgb", "depth"],
        {"rgb": 3, "depth": 1},
        num_classes=5,
        image_size=(32, 32),
        encoder="conv-tiny",
        fusion=fusion,
        fuse_stages=[2],
        dim=8,
        flow={"blocks": 1, "coupling_hidden": 8},
        head_dim=16,
        dropout=0.0,
    )
    if imputer:
        state = torch.get_rng_state()
        attach_imputers(model)
        assert torch.equal(state, torch.get_rng_state())  # its own generator: draws unchanged
    return model


@pytest.mark.parametrize("fusion", ["mango", "concat"])
def test_the_imputer_never_changes_the_task_path(fusion: str) -> None:
    """Same seed with and without an imputer: the same task parameters, the same outputs on
    complete inputs and the same gradients of the task loss; the imputer's loss moves only
    its own parameters."""
    plain, imputing = _segmentation_model(fusion, False), _segmentation_model(fusion, True)
    task_keys = list(plain.state_dict())
    assert all(torch.equal(plain.state_dict()[k], imputing.state_dict()[k]) for k in task_keys)
    extra = [k for k in imputing.state_dict() if k not in task_keys]
    assert extra and all(".filler.regressors." in k for k in extra)
    batch = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32)}
    mask = torch.randint(0, 5, (2, 32, 32))
    outputs = {}
    for name, model in (("plain", plain), ("imputing", imputing)):
        model.train()
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(out.logits, mask)
        if out.bits_per_dim is not None:
            loss = loss + out.bits_per_dim.mean()
        assert (out.aux_loss is not None) == (name == "imputing")
        total = loss + (out.aux_loss if out.aux_loss is not None else 0)
        total.backward()
        outputs[name] = out.logits.detach()
    assert torch.equal(outputs["plain"], outputs["imputing"])
    grads = dict(imputing.named_parameters())
    for key, parameter in plain.named_parameters():
        assert torch.equal(parameter.grad, grads[key].grad), key
    assert all(p.grad is not None for k, p in grads.items() if ".filler.regressors." in k)


def test_fill_problems_name_what_is_missing() -> None:
    plain = _segmentation_model("concat", False)
    assert FILLS == ("zero", "mean", "regress", "impute")
    assert fill_problem(plain, "zero") is None
    assert "without a flow" in fill_problem(plain, "impute")
    assert "no training mean" in fill_problem(plain, "mean")
    assert "model.imputer" in fill_problem(plain, "regress")
    imputing = _segmentation_model("mango", True)
    assert fill_problem(imputing, "regress") is None and fill_problem(imputing, "impute") is None


def test_a_concat_segmentation_model_fills_at_its_fused_stage_only() -> None:
    model = _segmentation_model("concat", True)
    fused = [s for s in model.stages if s.filler is not None]
    assert [i for i, s in enumerate(model.stages) if s.filler is not None] == [2]  # fuse_stages
    batch = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32)}
    optimizer = torch.optim.Adam(fused[0].filler.parameters(), lr=1e-2)
    model.train()
    model(batch).aux_loss.backward()  # the imputer's loss, through the stage's filler
    optimizer.step()  # an untrained imputer predicts the mean
    fused[0].filler.commit()
    model.eval()
    absent = {**batch, "present": {"depth": torch.tensor([False, True])}}
    logits = {}
    with torch.no_grad():
        for fill in ("zero", "mean", "regress"):
            with filling(model, fill):
                logits[fill] = model(absent).logits
    assert not torch.equal(logits["zero"][0], logits["mean"][0])
    assert not torch.equal(logits["mean"][0], logits["regress"][0])
    assert torch.equal(logits["zero"][1], logits["mean"][1])  # a complete sample: untouched
