"""Each user's rated items and ratings, as padded blocks for content models.

A content model describes a user by the items they rated (their profile), so it needs, for a
batch of users, every user's ``(item, rating)`` pairs side by side. ``RatingHistories`` keeps
them in compressed sparse rows (one run per user, in a seeded random order) and cuts a batch's
runs into padded ``[B, L]`` tensors in a few vectorised operations, with ``L`` at most
``max_len``: a user with more ratings contributes a fixed random subset of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distrec.data.dataset import Interactions

__all__ = ["RatingHistories", "HistoryBlock"]


@dataclass(frozen=True)
class HistoryBlock:
    item: torch.Tensor  # int64 [B, L], 0 where padded
    rating: torch.Tensor  # float32 [B, L], 0 where padded
    mask: torch.Tensor  # bool [B, L], True for real entries


@dataclass(frozen=True)
class RatingHistories:
    """User ``u``'s pairs are ``item[indptr[u]:indptr[u + 1]]`` and the same slice of ``rating``."""

    indptr: np.ndarray  # int64 [U + 1]
    item: np.ndarray  # int64 [N]
    rating: np.ndarray  # float32 [N]

    @classmethod
    def from_interactions(cls, data: Interactions, *, num_users: int, seed: int = 0) -> RatingHistories:
        """From ratings in any order; each user's run is shuffled (seeded), so a cut at ``max_len``
        keeps a random subset, not the oldest or the lowest item ids."""
        user = np.asarray(data.user, dtype=np.int64)
        key = np.random.default_rng([seed, 31]).random(len(user))
        order = np.lexsort((key, user))  # by user, then random
        counts = np.bincount(user, minlength=num_users)
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            indptr=indptr,
            item=np.asarray(data.item, dtype=np.int64)[order],
            rating=np.asarray(data.rating, dtype=np.float32)[order],
        )

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self, users: np.ndarray) -> np.ndarray:
        return self.indptr[users + 1] - self.indptr[users]

    def block(self, users: np.ndarray, *, max_len: int) -> HistoryBlock:
        """The histories of ``users`` [B], padded to the longest (at most ``max_len``) → [B, L]."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.indptr[users]
        lengths = np.minimum(self.indptr[users + 1] - starts, max_len)  # [B]
        width = max(int(lengths.max()) if len(users) else 0, 1)
        pos = np.arange(width)[None, :]  # [1, L]
        mask = pos < lengths[:, None]  # [B, L]
        at = np.where(mask, starts[:, None] + pos, 0)  # [B, L]; padding reads entry 0, then is zeroed
        item = self.item[at] if len(self.item) else np.zeros(at.shape, dtype=np.int64)
        rating = self.rating[at] if len(self.item) else np.zeros(at.shape, dtype=np.float32)
        return HistoryBlock(
            item=torch.from_numpy(np.where(mask, item, 0)),
            rating=torch.from_numpy(np.where(mask, rating, 0).astype(np.float32)),
            mask=torch.from_numpy(mask),
        )
