"""Mixed precision: encoders and heads under bf16 autocast, flow math in fp32, 200 steps stay finite."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mango.data.synthetic import SyntheticScenes
from mango.models.segmentation import SegmentationFusionModel


def test_200_bf16_autocast_steps_stay_finite_and_invertible():
    torch.manual_seed(0)
    model = SegmentationFusionModel(
        ["rgb", "depth"],
        {"rgb": 3, "depth": 1},
        5,
        (32, 32),
        encoder="conv-tiny",
        fusion="mango",
        fuse_stages=[2],
        dim=8,
        flow={"blocks": 2, "coupling_hidden": 16},
        head_dim=16,
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scenes = SyntheticScenes(64, "train", size=32)
    batches = [
        torch.utils.data.default_collate([scenes[i] for i in range(j, j + 8)])
        for j in range(0, 64, 8)
    ]
    losses = []
    for step in range(200):
        batch = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
            assert out.logits.dtype == torch.bfloat16  # the head really ran in bf16
            assert out.bits_per_dim.dtype == torch.float32  # the flow did not
            loss = (
                F.cross_entropy(out.logits.float(), batch["mask"]) + 0.1 * out.bits_per_dim.mean()
            )
        assert torch.isfinite(loss), f"step {step}: {loss}"
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(losses[-20:]) < sum(losses[:20])
    model.eval()
    with torch.no_grad():
        tokens = model.flow_tokens(batches[0], 2)
        flow = model.stages[2].fusion.flow
        back = flow.inverse(flow(tokens)[0])[0]
    assert ((back - tokens).norm() / tokens.norm()).item() < 1e-4


def test_mango_train_under_bf16_mixed_with_gradient_clipping(tmp_path):
    """The whole trainer under ``bf16-mixed`` (the GPU recipes' precision), clipping at 1.0:
    Lightning clips only what an unfused optimizer unscales, so the optimizer must allow it."""
    from pathlib import Path

    from mango.cli import main

    smoke = Path(__file__).resolve().parents[2] / "configs" / "synthetic-smoke.yaml"
    sets = ["trainer.precision=bf16-mixed", "optim.grad_clip=1.0", "data.train_scenes=16"]
    sets += ["data.val_scenes=4", "data.test_scenes=4"]
    args = ["train", "--config", str(smoke), "--out", str(tmp_path / "run"), "--max-steps", "3"]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
