"""The one partitioning rule per kind, on real gloo ranks: every row read by exactly one worker
(row groups, users, item ranges), user-owned rows on their owner with their ratings, halo rows
around an item range, and the steps every worker agrees to run."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributed as dist

from distrec.data.dataset import InteractionDataset
from distrec.data.partition import Partition, agreed_steps, batch_share, strided
from tests.helpers import run_ranks, tiny_synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, ratings=8000, rows_per_shard=3000)  # 3 shards, several row groups each
    return out


def _rows(data) -> np.ndarray:
    """(user, item, rating) rows as one sortable array [N, 3]."""
    return np.stack([data.user, data.item, data.rating.astype(np.float64)], axis=1)


def _shares(path: str) -> dict:
    ds = InteractionDataset(path)
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for kind in ("row_groups", "by_user", "item_range", "everything"):
        partition = Partition.of(kind)
        assert (partition.rank, partition.world) == (rank, world)
        out[kind] = _rows(partition.read(ds, split=ds.resolve_split(None), parts=["train"]))
    out["halo"] = _rows(Partition.of("item_range").read(ds, split=ds.resolve_split(None), parts=["train"], halo=2))
    out["items"] = Partition.of("item_range").items(ds.num_items)
    out["users"] = Partition.of("by_user").users(ds.num_users)
    out["steps"] = agreed_steps(100 if rank == 0 else 701, 100)
    return out


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def test_each_kind_gives_every_row_to_exactly_one_worker(dataset):
    shares = run_ranks(_shares, 2, dataset)
    ds = InteractionDataset(dataset)
    everything = _sorted(_rows(ds.read(split=None, parts=["train"])))
    for kind in ("row_groups", "by_user", "item_range"):
        np.testing.assert_array_equal(_sorted(np.concatenate([s[kind] for s in shares])), everything, err_msg=kind)
    for rank, share in enumerate(shares):
        np.testing.assert_array_equal(_sorted(share["everything"]), everything)
        assert np.all(share["by_user"][:, 0] % 2 == rank)  # a user's every rating on its owner, ratings carried
        np.testing.assert_array_equal(share["users"], np.arange(rank, ds.num_users, 2))
        first, stop = share["items"]
        assert np.all((share["item_range"][:, 1] >= first) & (share["item_range"][:, 1] < stop))
        halo = share["halo"][:, 1]  # the range and two items on each side
        assert halo.min() == max(first - 2, 0) and halo.max() == min(stop + 1, ds.num_items - 1)
        assert share["steps"] == 8  # ceil(701 / 100) on the larger share, on both workers
    assert shares[0]["items"][1] == shares[1]["items"][0] and shares[1]["items"][1] == ds.num_items


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_strided_shares_cover_every_unit_once(world):
    units = list(range(20))
    shares = [list(strided(units, rank=r, world=world)) for r in range(world)]
    assert sorted(sum(shares, [])) == units
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("global_rows", [7, 100, 257, 8192])
def test_a_global_batch_splits_into_parts_that_add_up_and_differ_by_at_most_one(global_rows, world):
    shares = [batch_share(global_rows, rank=r, world=world) for r in range(world)]
    assert sum(s.rows for s in shares) == global_rows
    assert max(s.rows for s in shares) - min(s.rows for s in shares) <= 1
    assert all(s.shape == max(t.rows for t in shares) and s.global_rows == global_rows for s in shares)
    assert [s.rows for s in shares] == sorted((s.rows for s in shares), reverse=True)  # the larger parts first


def test_a_global_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="a global batch of 2 rows cannot give each of 3 workers a row"):
        batch_share(2, rank=0, world=3)
