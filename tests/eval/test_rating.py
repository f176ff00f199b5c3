"""The global-mean-plus-item-bias baseline, by hand, on one process and split over 2 gloo ranks."""

from __future__ import annotations

import numpy as np
import pytest

from distrec.eval.rating import item_bias_baseline
from tests.helpers import run_ranks

ITEM = np.array([0, 0, 1, 1, 1, 2])
RATING = np.array([5, 3, 1, 2, 3, 4], dtype=np.float32)  # mean 3; item 3 has no ratings


def test_item_biases_by_hand():
    mean, bias = item_bias_baseline(ITEM, RATING, num_items=4, damping=0.0)
    assert mean == 3.0 and bias.tolist() == [1.0, -1.0, 1.0, 0.0]
    _, damped = item_bias_baseline(ITEM, RATING, num_items=4, damping=2.0)
    assert damped.tolist() == pytest.approx([0.5, -0.6, 1 / 3, 0.0])


def _half(rank_rows: list) -> tuple:
    import torch.distributed as dist

    rows = rank_rows[dist.get_rank()]
    mean, bias = item_bias_baseline(ITEM[rows], RATING[rows], num_items=4, damping=2.0)
    return mean, bias.tolist()


def test_workers_holding_parts_of_the_ratings_agree_with_one():
    got = run_ranks(_half, 2, [[0, 2, 5], [1, 3, 4]])
    assert got[0] == got[1]
    assert got[0][0] == 3.0 and got[0][1] == pytest.approx([0.5, -0.6, 1 / 3, 0.0])
