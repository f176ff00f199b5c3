"""Rating histories: the padded block of a batch of users against a per-user reference."""

from __future__ import annotations

import numpy as np

from distrec.data.dataset import Interactions
from distrec.data.histories import RatingHistories


def _data(seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, 400)
    return Interactions(user=user, item=rng.integers(0, 50, 400), rating=rng.integers(1, 6, 400).astype(np.float32))


def test_block_holds_each_users_pairs_capped_and_padded():
    data = _data()
    h = RatingHistories.from_interactions(data, num_users=32, seed=1)  # users 30, 31 rated nothing
    users = np.array([3, 31, 3, 7, 30])
    block = h.block(users, max_len=8)
    assert block.item.shape == block.rating.shape == block.mask.shape == (5, 8)
    for row, u in enumerate(users):
        pairs = sorted(zip(data.item[data.user == u].tolist(), data.rating[data.user == u].tolist()))
        got = list(zip(block.item[row][block.mask[row]].tolist(), block.rating[row][block.mask[row]].tolist()))
        assert len(got) == min(len(pairs), 8)
        assert set(got) <= set(pairs)  # a subset of this user's own pairs, with their ratings
        assert (block.item[row][~block.mask[row]] == 0).all() and (block.rating[row][~block.mask[row]] == 0).all()
    assert block.item[0].tolist() == block.item[2].tolist()  # the same user, the same fixed subset
    assert h.block(np.array([31]), max_len=8).mask.shape == (1, 1) and not h.block(np.array([31]), max_len=8).mask.any()


def test_full_block_without_cap_is_every_pair():
    data = _data(2)
    h = RatingHistories.from_interactions(data, num_users=30)
    block = h.block(np.arange(30), max_len=10_000)
    assert int(block.mask.sum()) == len(data.user)
    assert sorted(zip(np.repeat(np.arange(30), block.mask.sum(1).numpy()).tolist(), block.item[block.mask].tolist())) == sorted(
        zip(data.user.tolist(), data.item.tolist())
    )
