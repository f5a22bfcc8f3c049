"""The LightningModule: NaN guard naming the layer, learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mango.testing.flows import perturb
from mango.train.module import MangoModule, NonFiniteError, lr_lambda
from mango.train.run import load_config

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "synthetic-smoke.yaml"


def _module(*overrides: str) -> tuple[MangoModule, dict]:
    task, cfg = load_config(SMOKE, ["data.train_scenes=4", *overrides])
    module = MangoModule(task, cfg)
    batch = torch.utils.data.default_collate([task.dataset(cfg, "train")[i] for i in range(2)])
    return module, batch


def test_non_finite_loss_stops_naming_the_first_bad_layer():
    module, batch = _module()
    flow = module.model.stages[2].fusion.flow
    with torch.no_grad():
        flow.layers[1].layers[3].query.weight.fill_(float("nan"))  # block 2, MMCA v2
    with pytest.raises(NonFiniteError) as error:
        module.training_step(batch, 0)
    message = str(error.value)
    assert "non-finite flow tokens" in message
    assert "stages.2.fusion.flow.layers.1.layers.3" in message, message
    assert "\n" not in message


def test_finite_step_returns_task_loss_plus_weighted_nll():
    module, batch = _module("loss.nll_weight=0.5")
    module.eval()  # no dropout: the two evaluations below see the same function
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    out = module.model(batch)
    expected = module.task.loss(out, batch) + 0.5 * out.bits_per_dim.mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_the_nll_is_fitted_to_complete_samples_only():
    """A sample without a modality carries the zero rule's tokens, not data (docs/missing.md)."""
    module, batch = _module("loss.nll_weight=0.5")
    module.train().model(batch)  # ActNorm init
    perturb(module.model, scale=0.05)  # a flow that acts: a fresh one gives every sample one NLL
    module.eval()
    batch["present"] = {"rgb": torch.tensor([True, True]), "depth": torch.tensor([True, False])}
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    out = module.model(batch)
    expected = module.task.loss(out, batch) + 0.5 * out.bits_per_dim[0]
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(out.bits_per_dim[0], out.bits_per_dim.mean())  # it can tell
    batch["present"]["rgb"] = torch.tensor([False, True])  # no complete sample: no NLL
    loss = module.training_step(batch, 0)
    out = module.model(batch)
    assert torch.allclose(loss, module.task.loss(out, batch), atol=1e-6)


@pytest.mark.parametrize(
    "schedule,checks",
    [
        ("poly", {0: 0.1, 9: 1.0, 10: 1.0, 55: 0.5, 100: 0.0}),
        ("cosine", {10: 1.0, 55: 0.5, 100: 0.0}),
        ("constant", {10: 1.0, 99: 1.0}),
    ],
)
def test_warmup_then_schedule(schedule, checks):
    _, cfg = load_config(
        SMOKE, [f"optim.schedule={schedule}", "optim.warmup_steps=10", "trainer.max_steps=100"]
    )
    factor = lr_lambda(cfg)
    for step, value in checks.items():
        assert factor(step) == pytest.approx(value, abs=1e-9), (step, factor(step))


def test_ica_strengths_have_their_own_group_without_weight_decay():
    module, _ = _module("optim.gate_lr_mult=3", "optim.weight_decay=0.05")
    groups = module.configure_optimizers()["optimizer"].param_groups
    strengths = {id(m.strength) for m in module.model.modules() if hasattr(m, "strength")}
    (gate_group,) = [g for g in groups if {id(p) for p in g["params"]} == strengths]
    assert len(strengths) == 2 * 8  # 2 blocks of 8 ICA layers in the smoke config
    head_lr = module.cfg.optim.lr * module.cfg.optim.head_lr_mult
    assert gate_group["weight_decay"] == 0.0 and gate_group["lr"] == pytest.approx(3 * head_lr)
    others = [id(p) for g in groups if g is not gate_group for p in g["params"]]
    assert not strengths & set(others) and all(g["weight_decay"] == 0.05 for g in groups[:2])


@pytest.mark.parametrize(
    "precision,clip,fused",
    [
        ("32-true", "1.0", True),
        ("64-true", "1.0", True),
        ("16-mixed", "1.0", None),
        ("bf16-mixed", "1.0", None),
        ("bf16-mixed", "null", True),
    ],
)
def test_optimizer_is_fused_except_where_mixed_precision_clips(precision, clip, fused):
    """One fused update for all parameters; Lightning's mixed precision cannot clip one, so
    there (with the default clipping) the optimizer is the per-tensor one."""
    module, _ = _module(f"trainer.precision={precision}", f"optim.grad_clip={clip}")
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is fused
    before = [p.detach().clone() for p in module.model.parameters()]
    for p in module.model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert all(
        not torch.equal(a, p) for a, p in zip(before, module.model.parameters(), strict=True)
    )


def test_without_a_fused_kernel_the_optimizer_says_so_in_one_line(monkeypatch, caplog):
    """torch < 2.4 has no fused CPU kernel: the per-tensor update, and one line saying why."""
    import torch.utils._foreach_utils as foreach_utils

    monkeypatch.setattr(foreach_utils, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    module, _ = _module()
    with caplog.at_level("WARNING"):
        optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is None
    [record] = [r for r in caplog.records if "fused" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "no fused Adam for cpu parameters" in message


def test_a_failing_fused_optimizer_is_not_swallowed(monkeypatch):
    """Where the fused kernel exists, an error building it is the user's to see."""

    def broken(*args, **kwargs):
        raise RuntimeError("fused AdamW: something real went wrong")

    monkeypatch.setattr(torch.optim.AdamW, "__init__", broken)
    module, _ = _module()
    with pytest.raises(RuntimeError, match="something real"):
        module.configure_optimizers()


def test_unreadable_sample_reaches_the_step_and_stops_it_with_its_own_error():
    """The loader returns a DataError as the batch; the step (train or val) raises it as is."""
    from torch.utils.data import DataLoader

    from mango.errors import DataError
    from mango.train.data import DATA_FAILURE, Reported, collate

    class Flaky(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            if index == 2:
                raise DataError(f"sample {index}: unreadable")
            return {"x": torch.full((2,), float(index))}

    batches = list(DataLoader(Reported(Flaky()), batch_size=2, collate_fn=collate))
    assert torch.equal(batches[0]["x"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert set(batches[1]) == {DATA_FAILURE}
    module, _ = _module()
    for step in (module.training_step, module.validation_step):
        with pytest.raises(DataError, match=r"^sample 2: unreadable$"):
            step(batches[1], 0)
