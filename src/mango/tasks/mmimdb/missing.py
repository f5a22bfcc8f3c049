"""MM-IMDb's missing-modality protocol (Lee et al., CVPR 2023): the shipped per-sample order.

Lee et al. ("Multimodal Prompting with Missing Modalities") drop the poster, the plot or either
for a fraction η of the movies of every split (train, dev and test alike): missing-image,
missing-text, or missing-both (η/2 without poster, η/2 without plot, the rest complete).
Their tables are regenerated from a seed at run time, which has made published numbers drift
between users. mango ships the per-split order instead (``protocols/lee2023_order.npz``: one
permutation of ``0..N-1`` per split, for the published sizes 15552 / 2608 / 7799), and every
table is derived from it by :func:`mango.train.missing.absent_table`: for any η and case the
order is dealt out in turn to the listed modalities (``K`` of them) and the first
``round(η·N/K)`` of each modality's share are absent. So η = 30 % drops a subset of the movies
η = 70 % drops, and two users with this file evaluate exactly the same movies without each
modality.

The file was written by :func:`lee2023_order` (``numpy.random.default_rng(2023)``); it, not the
generator, is the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mango.tasks.mmimdb.genres import SPLIT_SIZES, canonical_split

ORDER_FILE = Path(__file__).parent / "protocols" / "lee2023_order.npz"
SEED = 2023


def lee2023_order(split: str, seed: int = SEED) -> np.ndarray:
    """The permutation the shipped file holds for ``split`` (regenerated; for checking it)."""
    name = canonical_split(split)
    offset = list(SPLIT_SIZES).index(name)
    return np.random.default_rng([seed, offset]).permutation(SPLIT_SIZES[name]).astype(np.int32)


def shipped_order(split: str, count: int) -> np.ndarray | None:
    """The shipped order of ``split``, or ``None`` when ``count`` is not its published size."""
    name = canonical_split(split)
    if count != SPLIT_SIZES[name]:
        return None
    with np.load(ORDER_FILE, allow_pickle=False) as orders:
        return orders[name]


def write_order_file(path: Path = ORDER_FILE) -> None:
    """(Re)write the order file; only for maintainers changing the protocol deliberately."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{name: lee2023_order(name) for name in SPLIT_SIZES})
