"""`mango bench --quick` runs end to end and reports every row (no timing assertions: ratios are
machine-dependent; only their presence, sign and the exactness side-results are checked)."""

from __future__ import annotations

import json

from benchmarks.suite import row

from mango.cli import main


def test_bench_quick_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [row["row"][:2] for row in result["rows"]]
    assert names == ["1.", "2.", "3.", "4.", "5.", "7.", "8.", "9."]
    assert all(
        row["mango"] > 0 and row["baseline"] > 0 and row["ratio"] > 0 for row in result["rows"]
    )
    assert all(row["met"] is None for row in result["rows"])  # goals are for the full shapes
    inverse = result["rows"][1]
    assert inverse["roundtrip_error_mango"] < 1e-5  # the exact inverse really inverts
    memory = result["rows"][3]
    assert memory["twelve_blocks_without_memory_saving_mib"] > 10 * memory["mango"]
    assert [s["tokens_per_modality"] for s in result["scaling"]] == [256, 512, 1024]
    bound = result["rows"][5]  # row 7: the step against FLOPs / matmul throughput, both stated
    assert bound["goal"] == "<= 3x slower"
    assert bound["gflop_counted"] > 0 and bound["matmul_gflops"] > 0
    assert bound["step_without_detached_nll_ms"] > 0
    demo = result["rows"][6]  # row 8: the demo's fusion model against its concatenation model
    assert demo["goal"] == "<= 1.5x slower" and "conv-small" in demo["shape"]
    tensors = result["rows"][7]  # row 9: the tensors smoke model against its concatenation model
    assert tensors["goal"] == "<= 3x slower" and "tensors" in tensors["row"]


def test_verdict_follows_ratio_and_goal():
    assert row("faster", 10.0, 120.0, ">= 10x faster")["met"] is True  # 12x
    assert row("faster", 10.0, 90.0, ">= 10x faster")["met"] is False  # 9x
    assert row("slower", 14.0, 10.0, "<= 1.5x slower")["met"] is True  # 1.4x
    assert row("slower", 16.0, 10.0, "<= 1.5x slower")["met"] is False  # 1.6x
    assert row("memory", 3.0, 1.0, "<= 2x", unit="MiB")["met"] is False
    assert row("compile", 1.0, 2.0, "measured (off by default)")["met"] is None
