"""Fixed-shape batches over a worker's slice, in lockstep with the other workers.

Every sharded forward is a collective (TorchRec all-to-alls the lookups), so all workers must
run the same number of steps even when their slices differ in size. Each epoch the workers
agree on the largest step count (distrec/data/partition.py: ``agreed_steps``); a worker whose
rows run out pads its last batches with rows of weight 0, which add nothing to the loss, the
gradients or the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import Interactions
from distrec.resources import Stopwatch

__all__ = ["Batch", "rating_batches", "EpochTotals"]


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


def rating_batches(data: Interactions, *, batch_size: int, steps: int, rng: np.random.Generator | None) -> Iterator[Batch]:
    """``steps`` batches of exactly ``batch_size`` rows; shuffled when ``rng`` is given."""
    n = len(data)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    user = torch.from_numpy(data.user)
    item = torch.from_numpy(data.item)
    rating = torch.from_numpy(data.rating)
    for step in range(steps):
        idx = torch.from_numpy(order[step * batch_size : (step + 1) * batch_size])
        real = len(idx)
        if real < batch_size:  # pad with row 0 (or id 0 if this worker has no rows) at weight 0
            idx = torch.cat([idx, torch.zeros(batch_size - real, dtype=idx.dtype)])
        weight = torch.zeros(batch_size)
        weight[:real] = 1.0
        u = user[idx] if n else torch.zeros(batch_size, dtype=torch.int64)
        i = item[idx] if n else torch.zeros(batch_size, dtype=torch.int64)
        r = rating[idx] if n else torch.zeros(batch_size)
        yield Batch(user=u, item=i, rating=r, weight=weight)


class EpochTotals:
    """One training step's bookkeeping, the same for every task: the fused optimizer updates the
    embedding rows inside ``backward``, the dense optimizer steps after; the loss and real rows
    are summed, and all-reduced into the epoch's metrics at the end."""

    def __init__(self) -> None:
        self.total = torch.zeros(2, dtype=torch.float64)  # objective sum, rows
        self.clock = Stopwatch()

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, batch: Batch, batch_size: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()  # embedding rows are updated inside backward (fused optimizer)
        opt.step()
        self.total += torch.tensor([loss.item() * batch_size, batch.real_rows], dtype=torch.float64)

    def metrics(self) -> dict[str, float]:
        """``train_loss``, ``train_samples_per_s`` and ``epoch_s`` over all workers (collective)."""
        seconds = self.clock.seconds()
        dist.all_reduce(self.total)
        return {
            "train_loss": float(self.total[0] / max(self.total[1], 1)),
            "train_samples_per_s": float(self.total[1]) / max(seconds, 1e-9),
            "epoch_s": seconds,
        }
