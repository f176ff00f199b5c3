"""A prepared split read as implicit feedback, and what each held-out part is scored against.

The protocol of the ∞-AE paper (and of most top-k work since Steck's EASE): every rating is a
positive; a model is fitted on ``train``; validation is scored with ``train`` as each user's
context and ``train`` items masked; test is scored with ``train + val`` as the context and
``train + val`` items masked. ``context(part)`` and ``seen(part)`` name that rule once, so the
closed forms, the trainer's top-k task and the report all apply the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from distrec.data.dataset import InteractionDataset
from distrec.data.user_items import UserItems
from distrec.eval.ranking_metrics import item_propensity

__all__ = ["Holdout"]

Part = Literal["val", "test"]


@dataclass(frozen=True)
class Holdout:
    train: UserItems
    val: UserItems
    test: UserItems
    train_val: UserItems  # train ∪ val: the context and mask when scoring test

    @classmethod
    def read(cls, dataset: InteractionDataset, split: str | None = None, *, rank: int = 0, world: int = 1) -> Holdout:
        """The split's train/val/test pairs (``rank``/``world``: only that worker's row groups)."""
        split = dataset.resolve_split(split)
        shape = {"num_users": dataset.num_users, "num_items": dataset.num_items}
        parts = {}
        for part in ("train", "val", "test"):
            rows = dataset.read(split=split, parts=[part], rank=rank, world=world)
            parts[part] = UserItems.from_pairs(rows.user, rows.item, **shape)
        return cls(**parts, train_val=parts["train"].union(parts["val"]))

    def target(self, part: Part) -> UserItems:
        return self.val if part == "val" else self.test

    def context(self, part: Part) -> UserItems:
        """What a model sees of each user when scoring ``part``."""
        return self.train if part == "val" else self.train_val

    def seen(self, part: Part) -> UserItems:
        """What is masked out of the ranking when scoring ``part`` (the same as the context)."""
        return self.context(part)

    def propensity(self) -> np.ndarray:
        """Inverse item propensities for PSP@k, from the training interactions (as the ∞-AE code)."""
        return item_propensity(self.train.item_counts(), self.train.nnz)
