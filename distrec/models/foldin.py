"""Folding new users into a trained biased MF (``distrec.models.mf``) with the items frozen.

A user the model has not seen gets the factor and bias that minimise the same objective the MF
trained on, restricted to that user's ratings, with every item's factor and bias held fixed:

    Σ_{i ∈ R_u} (r_ui - μ - b_i - b_u - p_u · q_i)²  +  n_u · (l2 · |p_u|² + bias_l2 · b_u²)

(the MF's L2 is on the rows each rating touches, hence the n_u). With ``f_i = [q_i, 1]`` and
``y_i = r_ui - μ - b_i`` that is a ridge regression per user, solved exactly:

    (Σ f_i f_iᵀ + n_u · diag(l2, ..., l2, bias_l2)) [p_u; b_u] = Σ f_i y_i

This is the fold-in step of the MF literature (e.g. Koren, Bell & Volinsky 2009: new users are
fitted against fixed item factors). A user without ratings gets the prior: zero factor and bias.
"""

from __future__ import annotations

import numpy as np

from distrec.data.dataset import Interactions

__all__ = ["fold_in_users"]


def fold_in_users(
    ratings: Interactions,
    users: np.ndarray,
    *,
    item_vector: np.ndarray,
    item_bias: np.ndarray,
    global_mean: float,
    l2: float,
    bias_l2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Factors [U, d] and biases [U] (float32) of ``users`` [U] (dense ids) from their ``ratings``.

    ``item_vector`` [I, d] and ``item_bias`` [I] are indexed by dense item id; rows of
    ``ratings`` for other users are ignored."""
    d = item_vector.shape[1]
    slot = {int(u): k for k, u in enumerate(users)}
    mine = np.isin(ratings.user, users)
    user, item, rating = ratings.user[mine], ratings.item[mine], ratings.rating[mine].astype(np.float64)
    order = np.argsort(user, kind="stable")
    user, item, rating = user[order], item[order], rating[order]
    feats = np.hstack([item_vector[item].astype(np.float64), np.ones((len(item), 1))])  # [N, d + 1]
    target = rating - global_mean - item_bias[item].astype(np.float64)  # [N]
    penalty = np.diag(np.r_[np.full(d, l2), bias_l2])  # [d + 1, d + 1]
    vectors = np.zeros((len(users), d), np.float32)
    biases = np.zeros(len(users), np.float32)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, np.int64)
    for start, stop in zip(starts, np.r_[starts[1:], len(user)].astype(np.int64)):
        f, y = feats[start:stop], target[start:stop]
        solution = np.linalg.solve(f.T @ f + (stop - start) * penalty, f.T @ y)
        k = slot[int(user[start])]
        vectors[k], biases[k] = solution[:d], solution[d]
    return vectors, biases
