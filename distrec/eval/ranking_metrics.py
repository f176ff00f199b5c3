"""Per-user top-k metrics for one block of users, from their score rows.

Everything here is vectorised over a block ``[B, I]`` (B users × all I items; positives and
seen items come as flat ``(row, item)`` pairs, so nothing is a Python loop) and returns one
value per user (``float64 [B]``, NaN where a metric is undefined for that user); averaging over
users, blocks and workers is ``ranking.py``'s job. For a user with positives T (n = |T|) and
top-k list R_k drawn from the items not masked as seen:

    HR@k        = |R_k ∩ T| / min(n, k)                        (the ∞-AE paper's "HR")
    Recall@k    = |R_k ∩ T| / n
    Precision@k = |R_k ∩ T| / k
    nDCG@k      = Σ_{j<k, R_j∈T} 1/log2(j+2)  /  Σ_{j<min(n,k)} 1/log2(j+2)
    PSP@k       = (Σ_{j<k, R_j∈T} w(R_j) / min(n, k))  /  (sum of the min(n,k) largest w over T)
    MRR         = 1 / (1 + #unmasked items scoring above the best-scored unmasked positive)
    AUC         = mean over positives of P(score(pos) > score(neg)), ties ½, against sampled negatives

PSP@k follows the ∞-AE authors' evaluation code (github.com/noveens/infinite_ae_cf, eval.py):
the propensity-scored hits are divided by min(n, k) and by the best achievable sum. That is
Jain et al.'s normalised PSP@k divided by min(n, k), so it equals it for single-positive users.
Weights ``w`` are inverse propensities (Jain, Prabhu & Varma, KDD 2016), see ``item_propensity``.
AUC is computed per user and averaged, like every other metric here (that code pools all users'
pairs into one AUC, which mixes users' score scales).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["Pairs", "item_propensity", "sample_negatives", "full_ranking_metrics", "sampled_ranking_metrics"]

Pairs = tuple[torch.Tensor, torch.Tensor]  # (row in the block, item), int64 [P] each


def item_propensity(item_counts: np.ndarray, num_interactions: int, *, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """Inverse propensity weights float64 [I]: 1/p_i = 1 + C·(N_i + B)^-A with C = (ln N − 1)(B + 1)^A,
    N_i the item's training interactions and N all training interactions (Jain et al. 2016)."""
    c = (math.log(max(num_interactions, 2)) - 1.0) * (b + 1.0) ** a
    return 1.0 + c * np.power(np.asarray(item_counts, dtype=np.float64) + b, -a)


def sample_negatives(excluded: Pairs, shape: tuple[int, int], n: int, generator: torch.Generator) -> Pairs:
    """``n`` items per row of a [B, I] block, drawn uniformly without replacement from the items
    not ``excluded``; returns ``items`` int64 [B, n] and ``valid`` bool [B, n] (False where a row
    has fewer than n candidates). Random keys + top-k: exact, and one pass over the block."""
    n = min(n, shape[1])
    keys = torch.rand(shape, generator=generator).to(excluded[0].device)  # a CPU generator: same draws on any device
    keys[excluded] = 2.0  # excluded items sort last
    values, items = keys.topk(n, dim=1, largest=False)
    return items, values < 2.0


def _count_below(neg_scores: torch.Tensor, valid: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each value [P], how many valid negatives of its row ([P, N] each) score below it, and
    how many equal it (float64 [P] each)."""
    v = values.unsqueeze(1)
    below = ((neg_scores < v) & valid).sum(1).double()
    ties = ((neg_scores == v) & valid).sum(1).double()
    return below, ties


def _per_user(values: torch.Tensor, rows: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
    """Mean over each user's positives of ``values`` [P] (one per positive) → float64 [B]."""
    return torch.zeros_like(n_pos).index_add_(0, rows, values.double()) / n_pos


def _auc(scores: torch.Tensor, positives: Pairs, n_pos: torch.Tensor, negatives: Pairs) -> torch.Tensor:
    rows, items = positives
    neg_items, valid = negatives
    below, ties = _count_below(scores.gather(1, neg_items)[rows], valid[rows], scores[rows, items])
    n_valid = valid.sum(1).double()  # [B]
    per_positive = (below + 0.5 * ties) / n_valid.clamp(min=1)[rows]
    return torch.where(n_valid > 0, _per_user(per_positive, rows, n_pos), torch.full_like(n_pos, math.nan))


def _largest_sums(values: torch.Tensor, rows: torch.Tensor, n_pos: torch.Tensor):
    """For values [P] of positives grouped by ``rows``, a function j [B] → the sum of each row's
    j largest values (1 ≤ j ≤ its count). Sorts the P pairs only, never a [B, I] block."""
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then by value, largest first
    cum = values[order].double().cumsum(0)  # [P]
    start = n_pos.long().cumsum(0) - n_pos.long()  # [B]: the row's first position
    before = torch.where(start > 0, cum[(start - 1).clamp(min=0)], torch.zeros_like(cum[:1]))  # [B]
    return lambda j: cum[start + j - 1] - before


def full_ranking_metrics(
    scores: torch.Tensor,
    *,
    positives: Pairs,
    seen: Pairs,
    ks: list[int],
    weights: torch.Tensor | None = None,
    negatives: Pairs | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Metrics of the full-ranking protocol for a block.

    ``scores`` float [B, I]; ``positives`` (every row has at least one) and ``seen`` (masked out
    of the ranking) as pairs; ``weights`` float64 [I] inverse propensities for PSP@k;
    ``negatives`` from ``sample_negatives`` for AUC. Returns the per-user values by metric name
    and the top-max(k) items int64 [B, K] (for coverage; -1 past the last unmasked item).
    """
    num_users, num_items = scores.shape
    rows, items = positives
    n_pos = torch.bincount(rows, minlength=num_users).double()  # [B]
    out: dict[str, torch.Tensor] = {}
    if negatives is not None:
        out["auc"] = _auc(scores, positives, n_pos, negatives)
    masked = scores.float().clone()
    masked[seen] = -math.inf
    target = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    target[positives] = True
    kmax = min(max(ks), num_items)
    top_scores, top = masked.topk(kmax, dim=1)  # [B, K]
    ranked = top_scores > -math.inf  # False where fewer than K items are unmasked
    hit = (target.gather(1, top) & ranked).double()  # a seen item is never a hit
    discount = 1.0 / torch.log2(torch.arange(kmax, dtype=torch.float64, device=scores.device) + 2.0)  # [K]
    ideal = discount.cumsum(0)  # ideal DCG with j+1 positives on top
    if weights is not None:
        w_top = weights[top]  # [B, K]
        best_w = _largest_sums(weights[items], rows, n_pos)  # the best PSP numerator with j hits
    for k in ks:
        kk = min(k, kmax)
        hits = hit[:, :kk].sum(1)
        denom = n_pos.clamp(max=k)
        slot = (denom.long().clamp(max=kmax) - 1).unsqueeze(1)  # index of min(n, k) - 1
        out[f"hr@{k}"] = hits / denom
        out[f"recall@{k}"] = hits / n_pos
        out[f"precision@{k}"] = hits / k
        out[f"ndcg@{k}"] = (hit[:, :kk] * discount[:kk]).sum(1) / ideal[slot.squeeze(1)]
        if weights is not None:
            out[f"psp@{k}"] = (hit[:, :kk] * w_top[:, :kk]).sum(1) / denom / best_w(slot.squeeze(1) + 1)
    best = torch.full((num_users,), -math.inf, device=scores.device).scatter_reduce_(0, rows, masked[rows, items], "amax")
    above = (masked > best.unsqueeze(1)).sum(1).double()  # items ranked above the best unmasked positive
    out["mrr"] = torch.where(best > -math.inf, 1.0 / (above + 1.0), torch.zeros_like(above))
    return out, top.masked_fill(~ranked, -1)


def sampled_ranking_metrics(
    scores: torch.Tensor, *, positives: Pairs, negatives: Pairs, ks: list[int]
) -> dict[str, torch.Tensor]:
    """Metrics of the sampled protocol (NCF, He et al. 2017): each positive is ranked against
    the user's sampled negatives only, its rank being the number of negatives scoring at least
    as high (ties count against it); a user's value is the mean over its positives.

    HR@k = [rank < k], nDCG@k = [rank < k] / log2(rank + 2), MRR = 1/(rank + 1), AUC as above.
    ``scores`` float [B, I]; ``positives`` pairs (≥ 1 per row); ``negatives`` [B, N] × 2.
    """
    rows, items = positives
    neg_items, valid = negatives
    n_pos = torch.bincount(rows, minlength=scores.shape[0]).double()
    below, ties = _count_below(scores.gather(1, neg_items)[rows], valid[rows], scores[rows, items])  # [P]
    n_valid = valid.sum(1).double()[rows]  # [P]
    rank = n_valid - below  # negatives scoring >= each positive
    out = {}
    for k in ks:
        inside = (rank < k).double()
        out[f"hr@{k}"] = _per_user(inside, rows, n_pos)
        out[f"ndcg@{k}"] = _per_user(inside / torch.log2(rank + 2.0), rows, n_pos)
    out["mrr"] = _per_user(1.0 / (rank + 1.0), rows, n_pos)
    auc = _per_user((below + 0.5 * ties) / n_valid.clamp(min=1), rows, n_pos)
    has_negatives = torch.zeros_like(n_pos).index_add_(0, rows, (n_valid > 0).double()) > 0
    out["auc"] = torch.where(has_negatives, auc, torch.full_like(n_pos, math.nan))
    return out
