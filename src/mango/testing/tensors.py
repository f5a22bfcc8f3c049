"""Tiny ``tensors`` datasets for tests, the smoke config and the tutorial.

Two modalities whose label needs both: ``a`` is a sequence ``(N, 6, 5)`` and ``b`` a vector
``(N, 12)``. Each sample draws two bits; ``a`` carries the first (a pattern added to its even
tokens) and ``b`` the second (a pattern added to its first half), under Gaussian noise. The
multi-class label is ``2·bit_a + bit_b`` (4 classes; a single modality can reach 50 % accuracy
at best); the multi-label target is ``[bit_a, bit_b, bit_a xor bit_b]``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np

from mango.io import atomic_write_bytes

SEQUENCE_SHAPE = (6, 5)
VECTOR_FEATURES = 12


def tensors_arrays(
    count: int,
    target: Literal["multiclass", "multilabel"] = "multiclass",
    seed: int = 0,
    noise: float = 0.5,
) -> dict[str, np.ndarray]:
    """The arrays of one split: ``a``, ``b``, ``label`` and ``id``.

    Example:
        >>> arrays = tensors_arrays(3)
        >>> {k: v.shape for k, v in arrays.items()}
        {'a': (3, 6, 5), 'b': (3, 12), 'label': (3,), 'id': (3,)}
    """
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(count, 2))
    pattern_a = np.random.default_rng(1).normal(size=SEQUENCE_SHAPE[1])
    pattern_b = np.random.default_rng(2).normal(size=VECTOR_FEATURES // 2)
    a = rng.normal(scale=noise, size=(count, *SEQUENCE_SHAPE))
    a[:, 0::2] += np.where(bits[:, :1, None], 1.0, -1.0) * pattern_a
    b = rng.normal(scale=noise, size=(count, VECTOR_FEATURES))
    b[:, : VECTOR_FEATURES // 2] += np.where(bits[:, 1:], 1.0, -1.0) * pattern_b
    if target == "multiclass":
        label = 2 * bits[:, 0] + bits[:, 1]
    else:
        label = np.stack([bits[:, 0], bits[:, 1], bits[:, 0] ^ bits[:, 1]], axis=1)
    ids = np.array([f"s{seed}-{i:05d}" for i in range(count)])
    return {"a": a.astype(np.float32), "b": b.astype(np.float32), "label": label, "id": ids}


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def write_tensors_fixture(
    root: str | Path,
    sizes: tuple[int, int, int] = (256, 64, 128),
    target: Literal["multiclass", "multilabel"] = "multiclass",
    seed: int = 0,
) -> Path:
    """Write ``train.npz``, ``val.npz`` (skipped when its size is 0) and ``test.npz`` under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for offset, (split, count) in enumerate(zip(("train", "val", "test"), sizes, strict=True)):
        if count:
            write_npz(root / f"{split}.npz", tensors_arrays(count, target, seed + offset))
    return root
