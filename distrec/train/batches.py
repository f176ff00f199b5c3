"""Fixed-shape batches over a worker's slice, in lockstep with the other workers, and the step
that makes a global batch one update whatever the number of workers.

Every sharded forward is a collective (TorchRec all-to-alls the lookups), so all workers must
run the same number of steps even when their slices differ in size. Each epoch the workers
agree on the largest step count (distrec/data/partition.py: ``agreed_steps``); a worker whose
rows run out pads its last batches with rows of weight 0, which add nothing to the loss, the
gradients or the metrics.

The global batch. A step reads ``train.global_batch(world)`` rows over all workers, each worker
its ``batch_share`` (partition.py; the workers' parts differ by at most one row, the batches are
padded to the largest). One step's update is then the global batch's mean gradient whatever the
number of workers: the gradients reaching a parameter are averaged over the workers, the dense
ones by DDP and the embedding rows' by TorchRec (its all-to-alls and reduce-scatters divide the
gradients they send back by the world size, ``torchrec.distributed.comm_ops.GRADIENT_DIVISION``),
so each worker backpropagates the sum of its rows' objectives × world / global batch. Where the
workers' parts are equal that is the mean over its batch, the model's own loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import Interactions
from distrec.data.partition import BatchShare, agreed_steps, batch_share
from distrec.resources import Stopwatch

if TYPE_CHECKING:
    from distrec.train.config import TrainLoopConfig

__all__ = ["Batch", "block_order", "rating_batches", "EpochBatches", "epoch_batches", "EpochTotals"]


@dataclass
class Batch:
    user: torch.Tensor  # int64 [B]
    item: torch.Tensor  # int64 [B]
    rating: torch.Tensor  # float32 [B]
    weight: torch.Tensor  # float32 [B]: 1 for real rows, 0 for padding

    @property
    def real_rows(self) -> int:
        return int(self.weight.sum())

    def to(self, device: torch.device) -> Batch:
        """The batch on the model's device (the same batch on the CPU)."""
        return Batch(
            user=self.user.to(device), item=self.item.to(device), rating=self.rating.to(device), weight=self.weight.to(device)
        )


def block_order(user: np.ndarray, item: np.ndarray, rng: np.random.Generator, blocks: int) -> np.ndarray:
    """FPSG's block order of rows (``train.order: blocks``): users and items cut into ``blocks``
    equal id ranges each, the ``blocks²`` (user range, item range) blocks in a random order, the
    rows of each block shuffled. A stretch of steps then reads and writes the embedding rows of
    one block, ~1/blocks of each table, which stay in cache where the whole table does not."""
    n = len(user)
    if n == 0:
        return np.arange(0)
    cell = (user.astype(np.int64) * blocks // (int(user.max()) + 1)) * blocks
    cell += item.astype(np.int64) * blocks // (int(item.max()) + 1)
    rank = rng.permutation(blocks * blocks).astype(np.uint16)[cell]  # each block's place in the epoch
    shuffled = rng.permutation(n)
    return shuffled[np.argsort(rank[shuffled], kind="stable")]  # a radix sort of 16-bit keys


def rating_batches(
    data: Interactions,
    *,
    batch_size: int,
    steps: int,
    rng: np.random.Generator | None,
    rows: int | None = None,
    blocks: int | None = None,
) -> Iterator[Batch]:
    """``steps`` batches of exactly ``batch_size`` rows, the next ``rows`` (default: all of them)
    rows of ``data`` in each, the rest padding; shuffled when ``rng`` is given, in
    ``block_order`` when ``blocks`` is given too."""
    rows = batch_size if rows is None else rows
    n = len(data)
    if rng is None:
        order = np.arange(n)
    elif blocks is None:
        order = rng.permutation(n)
    else:
        order = block_order(data.user, data.item, rng, blocks)
    user = torch.from_numpy(data.user)
    item = torch.from_numpy(data.item)
    rating = torch.from_numpy(data.rating)
    for step in range(steps):
        idx = torch.from_numpy(order[step * rows : (step + 1) * rows])
        real = len(idx)
        if real < batch_size:  # pad with row 0 (or id 0 if this worker has no rows) at weight 0
            idx = torch.cat([idx, torch.zeros(batch_size - real, dtype=idx.dtype)])
        weight = torch.zeros(batch_size)
        weight[:real] = 1.0
        u = user[idx] if n else torch.zeros(batch_size, dtype=torch.int64)
        i = item[idx] if n else torch.zeros(batch_size, dtype=torch.int64)
        r = rating[idx] if n else torch.zeros(batch_size)
        yield Batch(user=u, item=i, rating=r, weight=weight)


@dataclass
class EpochBatches:
    """One epoch's training batches of this worker: ``steps`` batches of its ``share`` of the
    global batch, in the order of ``rng`` (seeded by seed, epoch and rank: the same on resume;
    a task draws its negatives from it too)."""

    data: Interactions
    share: BatchShare
    steps: int
    rng: np.random.Generator
    blocks: int | None = None  # train.order: blocks (block_order)

    def __iter__(self) -> Iterator[Batch]:
        return rating_batches(
            self.data, batch_size=self.share.shape, rows=self.share.rows, steps=self.steps, rng=self.rng, blocks=self.blocks
        )


def epoch_batches(data: Interactions, train: TrainLoopConfig, epoch: int) -> EpochBatches:
    """This worker's batches of epoch ``epoch`` over its training rows ``data`` (collective: the
    workers agree on the step count). Every row of ``data`` is in exactly one batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    share = batch_share(train.global_batch(world), rank=rank, world=world)
    rng = np.random.default_rng([train.seed, epoch, rank])
    blocks = train.order_blocks if train.order == "blocks" else None
    return EpochBatches(data=data, share=share, steps=agreed_steps(len(data), share.rows), rng=rng, blocks=blocks)


class EpochTotals:
    """One training step's bookkeeping, the same for every task: the backward of the worker's
    part of the global batch's mean objective (the module docstring), in which the fused
    optimizer updates the embedding rows; the dense optimizer steps after. The loss and real
    rows are summed, and all-reduced into the epoch's metrics at the end."""

    def __init__(self, share: BatchShare) -> None:
        self.world, self.global_rows = dist.get_world_size(), share.global_rows
        self.total = torch.zeros(2, dtype=torch.float64)  # objective sum, rows
        self.clock = Stopwatch()

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, *, rows: int, real: int) -> None:
        """``loss``: this worker's objective summed over its rows and divided by ``rows`` (the
        batch's size, or its ``real`` rows, as the model averages); ``real`` rows are not padding."""
        opt.zero_grad(set_to_none=True)
        scale = rows * self.world / self.global_rows  # 1 where the workers' parts are equal
        (loss * scale).backward()  # embedding rows are updated inside backward (fused optimizer)
        opt.step()
        self.total += torch.tensor([loss.item() * rows, real], dtype=torch.float64)

    def metrics(self) -> dict[str, float]:
        """``train_loss``, ``train_samples_per_s`` and ``epoch_s`` over all workers (collective)."""
        seconds = self.clock.seconds()
        dist.all_reduce(self.total)
        return {
            "train_loss": float(self.total[0] / max(self.total[1], 1)),
            "train_samples_per_s": float(self.total[1]) / max(seconds, 1e-9),
            "epoch_s": seconds,
        }
