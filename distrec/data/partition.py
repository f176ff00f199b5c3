"""Which rows of a dataset worker ``rank`` of ``world`` reads: the one home of that rule.

A ``Partition`` is a value — the rule's ``kind`` and this worker's ``rank`` of ``world`` — that a
task asks for by name and then reads its rows through (``Partition.of(kind).read(dataset, ...)``):

- ``row_groups``: row groups ``rank, rank + world, ...`` across all shards in manifest order, by
  ranged reads: every row group is read by exactly one worker, the shares differ by at most one
  row group, and no worker fetches the bytes of another's rows (rating tasks).
- ``by_user``: every row of the users ``user % world == rank``: each worker reads its row groups,
  then one all-to-all moves each row to its user's owner (``by_user``). A worker then holds the
  complete histories of the users it trains and scores (content models; top-k tasks, which
  reject negatives against a user's history and score their own users, ``Partition.users``).
  ``by_owner`` moves rows to their user's or their item's owner the same way: ALS reads its row
  groups once and holds its training ratings both ways (distrec/train/als_data.py).
- ``item_range``: the rows of the contiguous items ``Partition.items`` (and ``halo`` items on each
  side, for a convolution over neighbouring rows), read from every row group (the dense loop).
- ``everything``: every row (the retrieval task: whole sequences); such a task shares out its
  examples instead, every world-th of one global shuffle per epoch (``strided``).

``batch_share``: a worker's part of the global batch (``train.global_batch_size`` rows a step
over all workers): its real rows per step, and the padded size every worker's batches share.
``agreed_steps``: how many fixed-size batches every worker runs over its share, as sharded
forwards are collectives that all workers must call in step.

Shares are decided when a task reads its data, i.e. at the start of a run or of a resumed one; a
run resumed on another number of workers (elastic training) repartitions here, at an epoch
boundary (checkpoints are taken there), and each epoch's batches are drawn from the new shares:
every training row is still read once per epoch, and the global batch keeps its size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from distrec.data.dataset import InteractionDataset, Interactions

__all__ = ["Kind", "Partition", "BatchShare", "strided", "by_owner", "by_user", "batch_share", "agreed_steps"]

Kind = Literal["row_groups", "by_user", "item_range", "everything"]
T = TypeVar("T")


def strided(units: Sequence[T], *, rank: int, world: int) -> Sequence[T]:
    """Worker ``rank``'s share of ``units``: every ``world``-th, from the ``rank``-th."""
    return units[rank::world]


@dataclass(frozen=True)
class Partition:
    """One worker's share of a dataset under the rule ``kind`` (see the module docstring)."""

    kind: Kind
    rank: int = 0
    world: int = 1

    @classmethod
    def of(cls, kind: Kind) -> Partition:
        """This process's share: its rank and world size in the process group (0 of 1 without one)."""
        if not dist.is_initialized():
            return cls(kind)
        return cls(kind, rank=dist.get_rank(), world=dist.get_world_size())

    def read(
        self, dataset: InteractionDataset, *, split: str, parts: Sequence[str], with_ts: bool = False, halo: int = 0
    ) -> Interactions:
        """This worker's rows of ``parts`` of the (resolved) ``split``. ``by_user`` is a collective
        (every worker calls it in step) and carries no timestamps; ``halo`` widens an item range."""
        if self.kind == "row_groups":
            return dataset.read(split=split, parts=parts, rank=self.rank, world=self.world, with_ts=with_ts)
        if self.kind == "by_user":
            if with_ts:
                raise ValueError("a by_user partition carries no timestamps")
            return by_user(dataset.read(split=split, parts=parts, rank=self.rank, world=self.world))
        rows = dataset.read(split=split, parts=parts, with_ts=with_ts)
        if self.kind == "everything":
            return rows
        first, stop = self.items(dataset.num_items)
        return _subset(rows, (rows.item >= first - halo) & (rows.item < stop + halo))

    def items(self, num_items: int) -> tuple[int, int]:
        """An ``item_range`` worker's items ``[first, stop)``: contiguous, sizes differing by at most one."""
        return self.rank * num_items // self.world, (self.rank + 1) * num_items // self.world

    def users(self, num_users: int) -> np.ndarray:
        """The users a ``by_user`` worker owns, int64 ascending."""
        return np.arange(self.rank, num_users, self.world, dtype=np.int64)


def by_owner(rows: Interactions, side: Literal["user", "item"] = "user") -> Interactions:
    """This worker's owned rows: every row of ``rows`` goes to worker ``id % world`` of its
    ``side`` (one all-to-all of users, items and ratings; timestamps are dropped). Collective;
    rows arrive grouped by the worker that read them, in rank order, each group in its reading
    order. By user: a top-k task's positives; ALS holds its training ratings both ways."""
    world = dist.get_world_size()
    owner = getattr(rows, side) % world
    order = np.argsort(owner, kind="stable")
    send = torch.bincount(torch.from_numpy(owner), minlength=world)  # rows to each worker
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    out = {}
    for name in ("user", "item", "rating"):
        values = torch.from_numpy(np.ascontiguousarray(getattr(rows, name)[order]))
        got = torch.empty(int(recv.sum()), dtype=values.dtype)
        dist.all_to_all_single(got, values, recv.tolist(), send.tolist())
        out[name] = got.numpy()
    return replace(rows, **out, ts=None)


def by_user(rows: Interactions) -> Interactions:
    """This worker's user-owned rows (``user % world``): ``by_owner(rows, "user")``."""
    return by_owner(rows, "user")


def _subset(rows: Interactions, keep: np.ndarray) -> Interactions:
    ts = None if rows.ts is None else rows.ts[keep]
    return replace(rows, user=rows.user[keep], item=rows.item[keep], rating=rows.rating[keep], ts=ts)


@dataclass(frozen=True)
class BatchShare:
    """One worker's part of a global batch: ``rows`` real rows a step, in batches of ``shape``
    rows (the padding at weight 0); the workers' ``rows`` add up to ``global_rows``."""

    rows: int
    shape: int
    global_rows: int


def batch_share(global_rows: int, *, rank: int, world: int) -> BatchShare:
    """Worker ``rank``'s part of ``global_rows`` rows a step: ``global_rows // world`` rows, one
    more on the first ``global_rows % world`` workers; every worker's batches hold the largest
    part, ``ceil(global_rows / world)``, so at most ``world - 1`` padded rows a step in all."""
    if global_rows < world:
        raise ValueError(f"a global batch of {global_rows} rows cannot give each of {world} workers a row")
    rows = global_rows // world + (rank < global_rows % world)
    return BatchShare(rows=rows, shape=math.ceil(global_rows / world), global_rows=global_rows)


def agreed_steps(local_rows: int, batch_size: int) -> int:
    """The number of steps every worker runs: enough for the largest share (all-reduced)."""
    steps = torch.tensor([math.ceil(local_rows / batch_size)], dtype=torch.int64)
    if dist.is_initialized():
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    return int(steps)
