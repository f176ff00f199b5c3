"""Each user's set of items as a compressed sparse row matrix (numpy; no scipy in the stack).

Top-k recommendation reads ratings as implicit feedback: a (user, item) pair is a positive
whatever its rating. ``UserItems`` holds those pairs per user, sorted and without duplicates,
and gives the views the rest of the code needs for a block of users: the flat
``(row in block, item)`` pairs (to mask seen items or mark positives), the dense 0/1 rows
(the input of EASE and ∞-AE, the ``X`` of their papers) and the same rows as a sparse CSR
tensor (a few percent dense: products with it cost nnz × width instead of rows × items × width).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from distrec.errors import DataError

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")  # stable for what is used here

__all__ = ["UserItems"]


@dataclass(frozen=True)
class UserItems:
    """Items of user ``u``: ``indices[indptr[u]:indptr[u + 1]]`` (sorted, unique)."""

    indptr: np.ndarray  # int64 [U + 1]
    indices: np.ndarray  # int64 [nnz]
    num_items: int

    @classmethod
    def from_pairs(cls, user: np.ndarray, item: np.ndarray, *, num_users: int, num_items: int) -> UserItems:
        """From (user, item) pairs [N] in any order; repeated pairs count once."""
        user, item = np.asarray(user, dtype=np.int64), np.asarray(item, dtype=np.int64)
        if len(user) and (user.min() < 0 or user.max() >= num_users or item.min() < 0 or item.max() >= num_items):
            raise DataError(
                f"user indices {user.min()}..{user.max()} and item indices {item.min()}..{item.max()} do not fit "
                f"{num_users:,} users × {num_items:,} items; the dataset's counts do not match its rows"
            )
        key = np.sort(user * num_items + item)  # by user, then item
        key = (
            key[np.concatenate(([True], key[1:] != key[:-1]))] if len(key) else key
        )  # not np.unique: numpy ≥ 2.3 hashes, far slower at 10⁸
        counts = np.bincount(key // num_items, minlength=num_users)
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr=indptr, indices=(key % num_items).astype(np.int64), num_items=num_items)

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def counts(self) -> np.ndarray:
        """Items per user, int64 [U]."""
        return np.diff(self.indptr)

    def item_counts(self) -> np.ndarray:
        """Users per item, int64 [I]."""
        return np.bincount(self.indices, minlength=self.num_items)

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def union(self, other: UserItems) -> UserItems:
        """Pairs in either (the same users and items)."""
        if other.num_users != self.num_users or other.num_items != self.num_items:
            raise ValueError("union of UserItems with different shapes")
        u1, u2 = self._row_of_each(), other._row_of_each()
        return UserItems.from_pairs(
            np.concatenate([u1, u2]),
            np.concatenate([self.indices, other.indices]),
            num_users=self.num_users,
            num_items=self.num_items,
        )

    def block(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs of ``users`` [B] as ``(row, item)`` [nnz_block], ``row`` indexing ``users``."""
        users = np.asarray(users, dtype=np.int64)
        starts, stops = self.indptr[users], self.indptr[users + 1]
        lengths = stops - starts
        rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
        # position of each pair inside its user's run: a global arange minus the run's offset
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        items = self.indices[np.repeat(starts, lengths) + np.arange(len(rows), dtype=np.int64) - offsets]
        return rows, items

    def only(self, users: np.ndarray) -> UserItems:
        """The pairs of ``users`` alone: the same shape, every other user's row empty."""
        rows, items = self.block(users)
        return UserItems.from_pairs(
            np.asarray(users, dtype=np.int64)[rows], items, num_users=self.num_users, num_items=self.num_items
        )

    def dense(self, users: np.ndarray, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows of ``users`` as a dense 0/1 matrix [B, I]."""
        rows, items = self.block(users)
        out = torch.zeros(len(users), self.num_items, dtype=dtype, device=device)
        out[torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)] = 1
        return out

    def sparse(self, users: np.ndarray, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows of ``users`` as a sparse CSR 0/1 matrix [B, I] (for ``sparse @ dense`` products)."""
        users = np.asarray(users, dtype=np.int64)
        _, items = self.block(users)
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(self.counts()[users], out=indptr[1:])
        return torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(items),
            torch.ones(len(items), dtype=dtype),
            size=(len(users), self.num_items),
            check_invariants=False,  # built sorted and in range here
        )

    def _row_of_each(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.counts())
