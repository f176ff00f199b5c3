"""Negative sampling and the top-k losses, against slow obvious references on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distrec.train.negatives import NegativeSampler, popularity_weights
from distrec.train.ranking_losses import bpr_loss, sampled_softmax_loss

ITEMS = 50


def _positives(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """20 users holding from 0 up to 45 of the 50 items (dense users make rejection work hard)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(20):
        held = rng.choice(ITEMS, size=min(45, 3 * u), replace=False)
        users += [u] * len(held)
        items += list(held)
    return np.array(users, np.int64), np.array(items, np.int64)


@pytest.mark.parametrize("popularity", [False, True])
def test_sampler_never_returns_a_training_positive(popularity):
    user, item = _positives()
    weights = popularity_weights(np.bincount(item, minlength=ITEMS) + 1, 0.75) if popularity else None
    sampler = NegativeSampler(user, item, num_items=ITEMS, weights=weights)
    held = set(zip(user.tolist(), item.tolist()))
    batch = np.repeat(np.arange(20), 50)  # every user, 50 times
    neg = sampler.sample(batch, 8, np.random.default_rng(1))
    assert neg.shape == (len(batch), 8) and neg.dtype == np.int64
    drawn = {(u, int(i)) for u, row in zip(batch.tolist(), neg) for i in row}
    assert not drawn & held
    # every item a dense user does not hold is reachable (the rejection does not bias it away)
    free = set(range(ITEMS)) - {i for u, i in held if u == 19}
    assert {i for u, i in drawn if u == 19} == free
    # the vectorised membership test agrees with the set
    probe_u, probe_i = np.repeat(np.arange(20), ITEMS), np.tile(np.arange(ITEMS), 20)
    expected = np.array([(u, i) in held for u, i in zip(probe_u.tolist(), probe_i.tolist())])
    np.testing.assert_array_equal(sampler.is_positive(probe_u, probe_i), expected)


def test_popularity_sampling_follows_counts():
    """Draw N = 400k negatives; each item's frequency must be within 5 binomial standard
    deviations of count^α / Σ count^α, renormalised over the items the user does not hold
    (a false alarm has probability < 1e-5 over all 50 items)."""
    counts = np.arange(1, ITEMS + 1) ** 2  # popularity spans 1 .. 2500
    weights = popularity_weights(counts, 0.5)
    held = np.array([0, 7, 49])  # the user's positives: rejected, the rest renormalised
    sampler = NegativeSampler(np.zeros(3, np.int64), held, num_items=ITEMS, weights=weights)
    n = 400_000
    neg = sampler.sample(np.zeros(n // 100, np.int64), 100, np.random.default_rng(2)).ravel()
    freq = np.bincount(neg, minlength=ITEMS) / n
    p = weights.copy()
    p[held] = 0
    p /= p.sum()
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), np.abs(freq - p) / np.maximum(sigma, 1e-12)
    assert freq[held].sum() == 0
    np.testing.assert_allclose(sampler.prob, weights / weights.sum())


def test_uniform_sampling_is_uniform_over_the_other_items():
    sampler = NegativeSampler(np.zeros(2, np.int64), np.array([3, 4]), num_items=10)
    neg = sampler.sample(np.zeros(20_000, np.int64), 10, np.random.default_rng(3)).ravel()
    freq = np.bincount(neg, minlength=10) / len(neg)
    p = np.where(np.isin(np.arange(10), [3, 4]), 0.0, 1 / 8)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(neg)) + 1e-12)


def test_a_user_holding_every_item_is_an_error_not_a_hang():
    sampler = NegativeSampler(np.zeros(ITEMS, np.int64), np.arange(ITEMS), num_items=ITEMS)
    with pytest.raises(ValueError, match="user 0"):
        sampler.sample(np.array([0]), 1, np.random.default_rng(0))


def test_bpr_loss_on_a_hand_checked_case():
    scores = torch.tensor([[2.0, 0.0, 3.0], [0.0, 1.0, 0.0]])  # positive first, 2 negatives
    # row 0: -log σ(2) = log(1 + e^-2), -log σ(-1) = log(1 + e); row 1: log(1 + e), log 2
    expected = [
        (math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 2,
        (math.log(1 + math.e) + math.log(2)) / 2,
    ]
    assert bpr_loss(scores).tolist() == pytest.approx(expected, rel=1e-6)
    s = scores.clone().requires_grad_()
    bpr_loss(s).sum().backward()  # d/ds_pos = -mean_j σ(s_j - s_pos)
    assert s.grad[0, 0].item() == pytest.approx(-(1 / (1 + math.exp(2)) + 1 / (1 + math.exp(-1))) / 2, rel=1e-6)


def test_sampled_softmax_loss_on_a_hand_checked_case():
    scores = torch.tensor([[1.0, 0.0, 0.0]])
    # no correction: -log(e / (e + 2))
    assert sampled_softmax_loss(scores).item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)
    # q = 1/4 each, n = 2: each negative counts e^0 / (2 · 1/4) = 2, so -log(e / (e + 4))
    q = torch.full((1, 2), 0.25)
    assert sampled_softmax_loss(scores, q).item() == pytest.approx(math.log(math.e + 4) - 1, rel=1e-6)
