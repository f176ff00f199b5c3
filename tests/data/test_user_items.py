"""Per-user item sets (CSR): duplicates, blocks of users, dense rows, union."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.data.user_items import UserItems
from distrec.errors import DataError


def test_from_pairs_sorts_and_deduplicates():
    x = UserItems.from_pairs(np.array([2, 0, 2, 2, 0]), np.array([3, 1, 0, 3, 4]), num_users=4, num_items=5)
    assert [x.items_of(u).tolist() for u in range(4)] == [[1, 4], [], [0, 3], []]
    assert x.counts().tolist() == [2, 0, 2, 0] and x.item_counts().tolist() == [1, 1, 0, 1, 1] and x.nnz == 4


def test_block_and_dense_rows():
    x = UserItems.from_pairs(np.array([0, 0, 1, 3]), np.array([1, 2, 0, 2]), num_users=4, num_items=3)
    rows, items = x.block(np.array([3, 1, 0]))
    assert list(zip(rows.tolist(), items.tolist())) == [(0, 2), (1, 0), (2, 1), (2, 2)]
    assert x.dense(np.array([3, 2, 0])).tolist() == [[0, 0, 1], [0, 0, 0], [0, 1, 1]]
    assert x.dense(np.array([1]), dtype=torch.bool).dtype == torch.bool


def test_union_and_range_check():
    a = UserItems.from_pairs(np.array([0, 1]), np.array([0, 1]), num_users=2, num_items=2)
    b = UserItems.from_pairs(np.array([0, 0]), np.array([0, 1]), num_users=2, num_items=2)
    assert [a.union(b).items_of(u).tolist() for u in range(2)] == [[0, 1], [1]]
    with pytest.raises(DataError, match=r"^user indices 2\.\.2 and item indices 0\.\.0 do not fit 2 users × 2 items; "):
        UserItems.from_pairs(np.array([2]), np.array([0]), num_users=2, num_items=2)


def test_only_keeps_the_given_users_rows():
    x = UserItems.from_pairs(np.array([0, 0, 1, 3]), np.array([1, 2, 0, 2]), num_users=4, num_items=3)
    kept = x.only(np.array([3, 0]))
    assert kept.num_users == 4 and [kept.items_of(u).tolist() for u in range(4)] == [[1, 2], [], [], [2]]
