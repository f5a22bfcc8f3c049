"""Lee et al.'s MM-IMDb missing-modality protocol: the shipped order is the reference, and the
tables built from it have the published proportions, nest across rates, and never drift."""

from __future__ import annotations

import numpy as np
import pytest

from mango.tasks.mmimdb.genres import SPLIT_SIZES
from mango.tasks.mmimdb.missing import ORDER_FILE, lee2023_order, shipped_order
from mango.tasks.mmimdb.task import MMIMDbTask
from mango.train.missing import absent_table


@pytest.mark.parametrize("split", list(SPLIT_SIZES))
def test_shipped_order_is_a_permutation_equal_to_its_generator(split: str) -> None:
    order = shipped_order(split, SPLIT_SIZES[split])
    assert order is not None and sorted(order.tolist()) == list(range(SPLIT_SIZES[split]))
    # If numpy ever changes this stream, the shipped file stays the reference: this flags it.
    assert np.array_equal(order, lee2023_order(split))


def test_missing_both_at_seventy_percent_on_the_test_split() -> None:
    order = shipped_order("test", 7799)
    table = absent_table(7799, ["image", "text"], 0.7, order=order)
    assert table.sum(0).tolist() == [2730, 2730] and int((~table.any(1)).sum()) == 2339
    smaller = absent_table(7799, ["image", "text"], 0.3, order=order)
    assert not (smaller & ~table).any()  # η = 30 % drops a subset of the η = 70 % movies
    image_only = absent_table(7799, ["image"], 0.7, order=order)
    assert int(image_only.sum()) == 5459


def test_only_published_sizes_use_the_shipped_order() -> None:
    assert shipped_order("val", 2608) is not None and shipped_order("train", 100) is None
    assert MMIMDbTask().missing_order(None, "test", 5) is None
    assert ORDER_FILE.stat().st_size < 100_000
