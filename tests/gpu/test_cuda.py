"""GPU checks (``make gpu-check``): skipped with a one-line reason on machines without CUDA."""

from __future__ import annotations

import pytest
import torch

from mango.flows import InvertibleCrossAttention, MangoFlow

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("partition", ["mmca", "imca", "lica"])
def test_ica_on_cuda_matches_its_dense_form(partition: str) -> None:
    """Outputs, log-dets and every gradient of the default path vs the dense path, float32."""
    torch.manual_seed(0)
    layers = []
    for fused in (True, False):
        torch.manual_seed(0)
        layer = InvertibleCrossAttention(64, (64, 64), partition, 1, fused=fused).cuda()
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
        layers.append(layer)
    x = torch.randn(4, 128, 64, device="cuda", requires_grad=True)
    outs, grads = [], []
    for layer in layers:
        y, logdet = layer(x)
        loss = (y * torch.linspace(-1, 1, 64, device="cuda")).sum() + logdet.sum()
        grads.append(torch.autograd.grad(loss, [x, *layer.parameters()]))
        outs.append((y.detach(), logdet.detach()))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_twelve_block_round_trip_on_cuda() -> None:
    torch.manual_seed(0)
    flow = MangoFlow(64, (64, 64), blocks=12).cuda().eval()
    x = torch.randn(8, 128, 64, device="cuda")
    with torch.no_grad():
        back = flow.inverse(flow(x)[0])[0]
    assert float((back - x).norm() / x.norm()) < 1e-5


def test_memory_saving_gradients_match_on_cuda() -> None:
    grads = []
    for saving in (False, True):
        torch.manual_seed(0)
        flow = MangoFlow(32, (16, 16), blocks=4, memory_saving=saving).cuda()
        x = torch.randn(4, 32, 32, device="cuda", requires_grad=True)
        z, logdet = flow(x)
        grads.append(
            torch.autograd.grad((z.square().sum() - logdet.sum()), [x, *flow.parameters()])
        )
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_bf16_autocast_training_of_the_synthetic_smoke_config(tmp_path) -> None:
    from pathlib import Path

    from mango.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "synthetic-smoke.yaml"
    args = ["train", "--config", str(config), "--out", str(tmp_path), "--max-steps", "200"]
    sets = ["--set", "trainer.accelerator=gpu", "--set", "trainer.precision=bf16-mixed"]
    assert main([*args, *sets]) == 0
    metrics = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "checkpoints" / "last.ckpt"),
                "--out",
                str(metrics),
            ]
        )
        == 0
    )
