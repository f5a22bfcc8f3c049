"""Two CPU processes (gloo) train a few steps with DDP and end with equal weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SMOKE = HERE.parents[1] / "configs" / "synthetic-smoke.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_ranks_end_with_equal_weights(tmp_path):
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), str(SMOKE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    start = torch.load(tmp_path / "start_rank0.pt")
    rank0 = torch.load(tmp_path / "end_rank0.pt")
    rank1 = torch.load(tmp_path / "end_rank1.pt")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    trained = [
        k for k in rank0 if rank0[k].is_floating_point() and not torch.equal(rank0[k], start[k])
    ]
    assert len(trained) > len(rank0) // 2, "training did not change the weights"
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 6
