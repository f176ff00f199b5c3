"""Negative items for top-k training: drawn in bulk, never one of the user's training positives.

    sampler = NegativeSampler(pairs_user, pairs_item, num_items=I, weights=None)   # uniform
    neg = sampler.sample(user, n, rng)        # int64 [B, n]

Draws are vectorised: one ``rng.integers`` (uniform) or one ``searchsorted`` into the cumulative
weights (popularity, ``P(i) ∝ weight_i``, e.g. training count^alpha as word2vec and most
implicit-feedback samplers do). A drawn item is rejected when ``(user, item)`` is a training
positive: the positives are kept as sorted keys ``user·I + item`` and the membership test is a
``searchsorted`` over all draws at once; only the few hits are drawn again (on ML-1M a user holds
~4% of the items on average, so a round or two suffices). ``prob`` gives the proposal
probability of each item, for the sampled-softmax correction (distrec/train/ranking_losses.py).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NegativeSampler", "popularity_weights", "MAX_ROUNDS"]

MAX_ROUNDS = 200  # redraw rounds before giving up on a user whose positives cover its candidates


def popularity_weights(item_counts: np.ndarray, alpha: float) -> np.ndarray:
    """``count^alpha`` float64 [I] (an item never seen in training has weight 0)."""
    counts = np.asarray(item_counts, dtype=np.float64)
    return np.where(counts > 0, np.power(counts, alpha), 0.0)


class NegativeSampler:
    """Items a user has no training interaction with, drawn uniformly or by ``weights``."""

    def __init__(self, user: np.ndarray, item: np.ndarray, *, num_items: int, weights: np.ndarray | None = None) -> None:
        """``user``/``item`` int64 [N]: the training positives of every user this sampler serves."""
        self.num_items = num_items
        self.keys = np.unique(np.asarray(user, np.int64) * num_items + np.asarray(item, np.int64))  # sorted
        if weights is None:
            self.cdf = None
            self.prob = np.full(num_items, 1.0 / num_items)
        else:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (num_items,) or weights.min() < 0 or weights.sum() <= 0:
                raise ValueError(f"sampler weights must be {num_items} non-negative values, not all 0")
            self.cdf = np.cumsum(weights)
            self.prob = weights / self.cdf[-1]

    def _draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        if self.cdf is None:
            return rng.integers(0, self.num_items, size=size, dtype=np.int64)
        return np.searchsorted(self.cdf, rng.random(size) * self.cdf[-1], side="right").astype(np.int64)

    def is_positive(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Whether each ``(user, item)`` (any equal shapes) is a training positive, bool."""
        keys = user * self.num_items + item
        if len(self.keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        at = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return self.keys[at] == keys

    def sample(self, user: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` negatives for each of ``user`` [B] (with replacement), int64 [B, n]."""
        user = np.asarray(user, dtype=np.int64)
        users = np.repeat(user, n)  # [B·n]
        items = self._draw(len(users), rng)
        todo = np.flatnonzero(self.is_positive(users, items))
        for _ in range(MAX_ROUNDS):
            if len(todo) == 0:
                return items.reshape(len(user), n)
            items[todo] = self._draw(len(todo), rng)
            todo = todo[self.is_positive(users[todo], items[todo])]
        raise ValueError(
            f"no negative item found for user {int(users[todo[0]])} after {MAX_ROUNDS} draws: its training "
            "positives cover (almost) every item the sampler can draw"
        )
