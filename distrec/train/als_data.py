"""Where ALS's rows live and how a half-sweep gets the other side's rows (Spark's block scheme).

**Partition.** Users and items are each split by id: worker ``rank`` owns rows ``rank, rank +
world, ...`` of both (``id % world``, as the top-k task partitions users), at local index
``id // world``. Each worker reads its row groups of the split once, then every training rating
moves twice (``by_owner`` of distrec/data/partition.py, one all-to-all each): to its user's owner, which solves that user,
and to its item's owner, which solves that item. Validation and test ratings go to their user's
owner, which scores them.

**Exchange.** Before solving its users a worker needs the factor rows of the items its users
rated (and, for scoring, the items of their held-out ratings); before solving its items, the
rows of the users who rated them. ``Exchange`` fetches them, planned once at start:

- ``all_gather``: every worker receives the whole table (small tables: one collective, no index);
- ``all_to_all``: each worker receives only the rows its ratings touch, from their owners (large
  tables: a worker never holds a copy of the whole table). The request lists are exchanged once;
  each fetch is then one ``all_to_all_single`` of rows.

``model.exchange: auto`` picks all-gather when the table is at most ``all_gather_max_mb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import InteractionDataset, Interactions
from distrec.data.partition import Partition, by_owner
from distrec.data.user_items import UserItems
from distrec.eval.holdout import Holdout
from distrec.eval.ranking_metrics import item_propensity
from distrec.models.als import ALSConfig, Rows, row_batches

__all__ = ["Exchange", "Side", "HeldOut", "ALSData", "read_als_data", "gather_all", "exchange_mode"]


def gather_all(local: torch.Tensor, total: int) -> torch.Tensor:
    """The whole table [total, k] from every worker's rows ``local`` (rows ``rank::world``)."""
    world = dist.get_world_size()
    if world == 1:
        return local
    size = -(-total // world)
    padded = torch.zeros(size, local.shape[1], dtype=local.dtype)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.stack(parts, 1).reshape(size * world, -1)[:total]  # id = local · world + owner


def exchange_mode(cfg: ALSConfig, total: int) -> str:
    if cfg.exchange != "auto":
        return cfg.exchange
    return "all_gather" if total * cfg.width * 4 <= cfg.all_gather_max_mb * 2**20 else "all_to_all"


class Exchange:
    """Fetches the rows ``need`` (sorted unique global ids) of a table split ``id % world`` into a
    working table; ``index(ids)`` gives their positions in it. Collective: ``fetch`` on every worker."""

    def __init__(self, need: np.ndarray, *, total: int, mode: str) -> None:
        self.total, self.rows = total, len(need)
        self.mode = mode if dist.get_world_size() > 1 else "all_gather"
        if self.mode == "all_gather":  # the working table is the whole table
            return
        world = dist.get_world_size()
        owner = need % world
        self.order = need[np.argsort(owner, kind="stable")]  # working position → global id
        self.recv = torch.bincount(torch.from_numpy(owner), minlength=world)
        self.send = torch.empty_like(self.recv)
        dist.all_to_all_single(self.send, self.recv)
        self.serve = torch.empty(int(self.send.sum()), dtype=torch.int64)  # my local rows each worker asks for
        dist.all_to_all_single(self.serve, torch.from_numpy(self.order // world), self.send.tolist(), self.recv.tolist())
        self.sorted = np.argsort(self.order)

    def index(self, ids: np.ndarray) -> np.ndarray:
        if self.mode == "all_gather":
            return ids
        return self.sorted[np.searchsorted(self.order, ids, sorter=self.sorted)]

    def fetch(self, local: torch.Tensor) -> torch.Tensor:
        """The working table [rows needed, k] from every worker's ``local`` rows."""
        if self.mode == "all_gather":
            return gather_all(local, self.total)
        out = torch.empty(len(self.order), local.shape[1], dtype=local.dtype)
        dist.all_to_all_single(out, local[self.serve], self.recv.tolist(), self.send.tolist())
        return out

    def describe(self) -> str:
        if self.mode == "all_gather":
            return f"all-gather of all {self.total:,} rows"
        return f"all-to-all of the {self.rows:,} of {self.total:,} rows its ratings touch"


@dataclass
class Side:
    """This worker's rows of users or items."""

    name: str
    total: int  # rows of this side in the dataset
    ids: np.ndarray  # int64 [R]: global ids of this worker's rows
    rows: Rows  # their training ratings; cols index the exchange's working table of the other side
    exchange: Exchange  # the other side's rows they need
    weight: torch.Tensor  # float64 [R]: W (ratings, or Σ confidence over all items; at least 1)
    scale: torch.Tensor  # float32 [R]: s = W^ν, the rows' multiplier of λ
    batches: list[torch.Tensor]


@dataclass
class HeldOut:
    """Validation or test ratings of this worker's users: local user, working item position, rating."""

    user: torch.Tensor  # int64 [N]
    item: torch.Tensor  # int64 [N]
    rating: torch.Tensor  # float32 [N]


@dataclass
class ALSData:
    users: Side
    items: Side
    held: dict[str, HeldOut]
    ratings: int  # training ratings, all workers
    mean: float  # training mean, all workers
    variance: float
    holdout: Holdout | None = None  # implicit: this worker's users' train/val/test items
    propensity: np.ndarray | None = None  # implicit: inverse item propensities (PSP@k)


def _side(name: str, ids: np.ndarray, own: np.ndarray, other: np.ndarray, rating: np.ndarray, *, cfg: ALSConfig,
          total: int, other_total: int, extra_need: np.ndarray) -> Side:  # fmt: skip
    world = dist.get_world_size()
    exchange = Exchange(np.unique(np.concatenate([other, extra_need])), total=other_total, mode=exchange_mode(cfg, other_total))
    rows = Rows.from_pairs(own // world, exchange.index(other), rating, rows=len(ids))
    if cfg.objective == "implicit":  # Σ over all items of c: 1 each, plus c − 1 on the observed
        extra = cfg.alpha * (rows.values if cfg.confidence == "rating" else torch.ones_like(rows.values))
        weight = other_total + torch.zeros(len(ids), dtype=torch.float64).index_add_(0, _row_of(rows), extra.double())
    else:
        weight = rows.counts().double().clamp_min(1.0)
    scale = weight.pow(cfg.exponent).float()
    return Side(name, total, ids, rows, exchange, weight, scale, row_batches(rows, width=cfg.width, budget=cfg.batch_floats))


def _row_of(rows: Rows) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(rows.num_rows), rows.counts())


def read_als_data(dataset: InteractionDataset, split: str, cfg: ALSConfig) -> ALSData:
    """Read this worker's row groups, move the ratings to their owners, plan the exchanges. Collective."""
    partition = Partition.of("row_groups")
    rank, world = partition.rank, partition.world
    users, items = dataset.num_users, dataset.num_items
    parts = {p: partition.read(dataset, split=split, parts=[p]) for p in ("train", "val", "test")}
    rating = parts["train"].rating.astype(np.float64)
    sums = torch.tensor([len(rating), rating.sum(), np.square(rating).sum()], dtype=torch.float64)
    dist.all_reduce(sums)
    count, total, square = sums.tolist()
    mean = total / max(count, 1.0)
    by_user, by_item = by_owner(parts["train"], "user"), by_owner(parts["train"], "item")
    held = {p: by_owner(parts[p], "user") for p in ("val", "test")}
    user_ids, item_ids = np.arange(rank, users, world), np.arange(rank, items, world)
    scored = np.concatenate([held["val"].item, held["test"].item])
    u = _side(
        "user", user_ids, by_user.user, by_user.item, by_user.rating, cfg=cfg, total=users, other_total=items, extra_need=scored
    )
    i = _side(
        "item",
        item_ids,
        by_item.item,
        by_item.user,
        by_item.rating,
        cfg=cfg,
        total=items,
        other_total=users,
        extra_need=np.zeros(0, np.int64),
    )
    out = ALSData(
        users=u,
        items=i,
        held={p: _held(rows, u.exchange, world) for p, rows in held.items()},
        ratings=int(count),
        mean=mean if cfg.objective == "explicit" else 0.0,
        variance=max(square / max(count, 1.0) - mean * mean, 1e-6),
    )
    if cfg.objective == "implicit":
        shape = {"num_users": users, "num_items": items}
        pairs = {p: UserItems.from_pairs(r.user, r.item, **shape) for p, r in (("train", by_user), *held.items())}
        out.holdout = Holdout(**pairs, train_val=pairs["train"].union(pairs["val"]))
        counts = torch.from_numpy(pairs["train"].item_counts())
        dist.all_reduce(counts)
        out.propensity = item_propensity(counts.numpy(), int(counts.sum()))
    return out


def _held(rows: Interactions, exchange: Exchange, world: int) -> HeldOut:
    return HeldOut(
        user=torch.from_numpy(rows.user // world),
        item=torch.from_numpy(exchange.index(rows.item)),
        rating=torch.from_numpy(rows.rating.astype(np.float32)),
    )
