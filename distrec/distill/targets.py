"""The real users a distillation step predicts: sparse rows, densified one batch at a time.

The training pairs are held as ``UserItems`` (8 bytes a pair plus 8 a user: Netflix's 100M
ratings ≈ 0.8 GB), read from the dataset's shards on any fsspec URI; only the step's batch
becomes a dense ``[B, I]`` matrix, so no users × items matrix is ever formed.

Each worker draws its own batch (seeded by seed, step and rank); with ``batch_users`` unset the
batch is every active user (the paper's full-batch setting), split between the workers.
"""

from __future__ import annotations

import numpy as np
import torch

from distrec.data.partition import strided
from distrec.data.user_items import UserItems

__all__ = ["TargetBatches"]


class TargetBatches:
    def __init__(self, train: UserItems, *, batch_users: int | None, seed: int, rank: int = 0, world: int = 1) -> None:
        self.train = train
        self.active = np.flatnonzero(train.counts() > 0)  # users with a training item
        self.batch_users, self.seed, self.rank, self.world = batch_users, seed, rank, world

    def users(self, step: int) -> np.ndarray:
        """This worker's real users for ``step`` (sorted)."""
        if self.batch_users is None or self.batch_users >= len(self.active):
            return strided(self.active, rank=self.rank, world=self.world)
        rng = np.random.default_rng([self.seed, step, self.rank])
        return np.sort(rng.choice(self.active, size=self.batch_users, replace=False))

    def batch(self, step: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """X_t [B, I], 0/1, built on ``device`` (only the batch's indices come from the host)."""
        return self.train.dense(self.users(step), dtype=dtype, device=device)
