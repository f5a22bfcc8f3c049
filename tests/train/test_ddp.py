"""Two CPU processes (gloo; NCCL on two GPUs, marked gpu) train with DDP: equal weights at the end;
a NaN on one rank stops both."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mango.train.checkpoint import read_checkpoint

HERE = Path(__file__).resolve().parent
SMOKE = HERE.parents[1] / "configs" / "synthetic-smoke.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_script(out: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), str(SMOKE), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,  # both ranks hold the pipes: returning means neither hangs
        env=env,
    )


def _ranks_end_with_equal_weights(tmp_path: Path, *extra: str) -> None:
    result = _run_script(tmp_path, *extra)
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
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 6


def test_two_process_ddp_ranks_end_with_equal_weights(tmp_path):
    _ranks_end_with_equal_weights(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpu_nccl_ddp_ranks_end_with_equal_weights(tmp_path):
    _ranks_end_with_equal_weights(tmp_path, "gpu")


def _the_one_error_line(out: Path, mode: str) -> str:
    """Run ``ddp_script.py`` in ``mode``: both ranks exit 2, no traceback, one ``mango:`` line."""
    result = _run_script(out, mode, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("mango:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    return lines[0]


def test_nan_on_one_rank_stops_both_with_one_line(tmp_path):
    line = _the_one_error_line(tmp_path, "nan-on-rank-1")
    assert line.startswith("mango: error: step 3 on rank 1: non-finite flow tokens"), line
    # the poisoned ICA layer (its one-node forward computes the query projection itself)
    assert "first non-finite output in stages.2.fusion.flow.layers.1.layers.3" in line
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(checkpoint)["global_step"] == 3  # nothing from the failed step


def test_unreadable_sample_on_one_rank_stops_both_with_one_line(tmp_path):
    """A DataError in rank 1's loader reaches both ranks' step: no rank waits in a collective."""
    line = _the_one_error_line(tmp_path, "bad-data-on-rank-1")
    assert line.startswith("mango: error: scene "), line
    assert line.endswith("unreadable (injected by the test) (rank 1, step 2)"), line


def test_a_full_disk_on_the_writing_rank_stops_both_with_one_line(tmp_path):
    """Rank 0 cannot write step 6's checkpoint: rank 1 does not wait in a collective for it."""
    line = _the_one_error_line(tmp_path, "full-disk-on-rank-0")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert line == (
        f"mango: error: {checkpoint}: cannot write (No space left on device); "
        "the previous file is kept"
    )
    assert read_checkpoint(checkpoint)["global_step"] == 3  # the interval before is kept
