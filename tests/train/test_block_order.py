"""``train.order: blocks``, FPSG's block order of an epoch's rows: every row once, the rows of each
(user range, item range) block together, blocks in a seeded random order; and a run trained in it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distrec.config import ConfigError, from_dict
from distrec.train.batches import block_order
from distrec.train.config import TrainConfig
from tests.helpers import job_on_ranks, tiny_synthetic, training_seed


def _cells(user: np.ndarray, item: np.ndarray, blocks: int) -> np.ndarray:
    return (user * blocks // (user.max() + 1)) * blocks + item * blocks // (item.max() + 1)


@pytest.mark.parametrize("blocks", [2, 8, 255])
def test_every_row_once_each_block_in_one_stretch_in_a_seeded_order(blocks):
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 1000, 20_000), rng.integers(0, 300, 20_000)
    cells = _cells(user, item, blocks)

    def visits(order: np.ndarray) -> np.ndarray:  # the blocks in the order the epoch reads them
        seen = cells[order]
        return seen[np.r_[True, np.diff(seen) != 0]]

    order = block_order(user, item, np.random.default_rng([1, 2]), blocks)
    assert np.array_equal(np.sort(order), np.arange(len(user)))  # a permutation: every row once
    assert np.array_equal(np.sort(visits(order)), np.unique(cells))  # each block's rows in one stretch
    assert np.array_equal(order, block_order(user, item, np.random.default_rng([1, 2]), blocks))  # seeded
    other = block_order(user, item, np.random.default_rng([1, 3]), blocks)  # the next epoch's seed
    assert not np.array_equal(visits(order), visits(other))
    assert len(block_order(user[:0], item[:0], rng, blocks)) == 0


def test_order_blocks_out_of_range_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="order_blocks"):
        from_dict(
            TrainConfig,
            {"data": {"path": "x"}, "model": {"name": "mf"}, "output_dir": "o", "train": {"order": "blocks", "order_blocks": 1}},
        )
    with pytest.raises(ConfigError, match="order"):
        from_dict(TrainConfig, {"data": {"path": "x"}, "model": {"name": "mf"}, "output_dir": "o", "train": {"order": "tiles"}})


@pytest.mark.parametrize("model", ["als", "glocal_k", "two_tower"])
def test_block_order_is_refused_for_a_model_that_trains_on_no_rating_rows(model):
    with pytest.raises(ConfigError, match="train.order=blocks"):
        from_dict(TrainConfig, {"data": {"path": "x"}, "model": {"name": model}, "output_dir": "o", "train": {"order": "blocks"}})


def test_mf_trained_in_block_order_on_two_workers_loses_loss(tmp_path):
    data = str(tmp_path / "data")
    tiny_synthetic(data, ratings=8000)
    cfg = from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {"name": "mf", "dim": 8, "init_std": 0.1},
            "train": {"epochs": 3, "global_batch_size": 256, "order": "blocks", "order_blocks": 4, "seed": training_seed()},
            "optim": {"sparse_lr": 0.05},
            "output_dir": str(tmp_path / "out"),
        },
    )
    job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["val_rmse"] < history[0]["val_rmse"], history
