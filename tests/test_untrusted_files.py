"""Files from strangers never run code: the payload is live, and no loader in mango unpickles freely.

The per-entry-point tests (``eval``, ``predict``, ``train --resume``, MM-IMDb ``metadata.npy``)
are beside the code they cover; see the Security section of docs/reliability.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "mango"
#: the one module that unpickles, with an unpickler admitting only numpy arrays and plain data
RESTRICTED_UNPICKLER = SRC / "tasks" / "mmimdb" / "metadata.py"


def test_the_payload_runs_when_a_file_is_unpickled_unsafely(payload, tmp_path):
    """Without this, a test that finds no marker would prove nothing."""
    torch.save({"state_dict": {}, "mango": payload}, tmp_path / "evil.ckpt")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert payload.marker.exists()
    payload.marker.unlink()
    np.save(tmp_path / "evil.npy", {"ix_to_word": {0: "a"}, "extra": payload}, allow_pickle=True)
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert payload.marker.exists()


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return "missing"


def _calls() -> list[tuple[str, str, ast.Call]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                where = f"{path.relative_to(SRC)}:{node.lineno}"
                found.append((where, ast.unparse(node.func), node))
    return found


def test_every_loader_in_mango_refuses_pickled_code():
    """torch.load weights-only, np.load without pickles, yaml safe, pickle only restricted."""
    problems = []
    for where, func, call in _calls():
        if func == "torch.load" and _keyword(call, "weights_only") is not True:
            problems.append(f"{where}: torch.load without weights_only=True")
        if func in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") is not False:
            problems.append(f"{where}: {func} without allow_pickle=False")
        if func.endswith("read_array") and _keyword(call, "allow_pickle") is not False:
            problems.append(f"{where}: {func} without allow_pickle=False")
        if func in ("yaml.load", "yaml.full_load", "yaml.unsafe_load"):
            problems.append(f"{where}: {func} (use yaml.safe_load)")
        if func.startswith("pickle.") and where.split(":")[0] != str(
            RESTRICTED_UNPICKLER.relative_to(SRC)
        ):
            problems.append(f"{where}: {func} outside the restricted unpickler")
    assert not problems, problems
    assert any(func == "torch.load" for _, func, _ in _calls())  # the scan sees the loaders
