"""Top-k evaluation over all items, batched by users and split across workers.

    metrics = evaluate_ranking(score, target=holdout.test, seen=holdout.seen("test"),
                               cfg=RankingConfig(ks=[10, 100]), prefix="test", propensity=w)

``score(users)`` returns the scores of every item for a block of users (``[B] → [B, I]``): a
matmul of user and item factors, EASE's ``X_u·B``, ∞-AE's kernel regression, or a trained
model's forward. Nothing ever holds more than one block ``[B, I]`` of scores (B =
``block_users``; Netflix-sized: 480k users × 17.7k items is never materialised).

Users with at least one positive in ``target`` are evaluated; metrics are means over them (per
metric, over the users for which it is defined), as fractions in [0, 1]. Papers print them ×100
(the ∞-AE paper's "nDCG@10 = 32.82" is ``test_ndcg@10 = 0.3282`` here); ``PAPER_SCALE`` says
which metrics the report multiplies.

**Protocols.** ``full`` (the default; the ∞-AE paper's): every item not in ``seen`` is ranked;
keys ``{prefix}_hr@10``, ``ndcg@k``, ``recall@k``, ``precision@k``, ``psp@k``, ``mrr``, ``auc``
(against ``auc_negatives`` sampled negatives), ``coverage@k`` (share of the catalogue that
appears in someone's top-k). ``sampled`` (NCF's leave-one-out protocol, He et al. 2017): each
positive is ranked against ``sampled_negatives`` items the user never interacted with; its keys
carry the label, ``{prefix}_sampled100_hr@10``, so sampled figures are never mistaken for
full-ranking ones. Negatives exclude ``seen`` and ``target``.

**Workers.** Every worker holding all users' ``target`` and ``seen`` (compact: 8 bytes a pair),
the evaluated users are cut into blocks in one global order and block j goes to worker j mod
world; a worker holding only its own users' rows passes them as ``users``. Per-metric sums and
counts (and the coverage sets) are all-reduced, so the result does not depend on the number of
workers (tested). Without an initialised process group it runs on one process. ``score`` may be
a collective (a sharded TorchRec lookup): every worker calls it the same number of times (a
worker out of blocks scores a one-user padding block).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from distrec.config import NonNegative, Positive
from distrec.console import progress_bar
from distrec.data.user_items import UserItems
from distrec.eval.ranking_metrics import full_ranking_metrics, sample_negatives, sampled_ranking_metrics

__all__ = ["RankingConfig", "Scorer", "evaluate_ranking", "metric_names", "PAPER_SCALE"]

Scorer = Callable[[torch.Tensor], torch.Tensor]  # users int64 [B] → scores float [B, I]

PAPER_SCALE = {"auc": 1.0}  # metric (without k) → factor papers print it with; 100 if absent


@dataclass
class RankingConfig:
    ks: list[Positive[int]] = field(default_factory=lambda: [10, 100])
    protocol: Literal["full", "sampled"] = "full"
    sampled_negatives: Positive[int] = 100  # protocol=sampled: negatives each positive is ranked against (NCF: 100)
    auc_negatives: NonNegative[int] = 50  # protocol=full: sampled negatives per user for AUC (the ∞-AE code: 50); 0 = no AUC
    block_users: Positive[int] = 2048  # users scored at once: memory ≈ block_users × items × 4 bytes × a few
    seed: NonNegative[int] = 0  # negatives are drawn per block from (seed, the block's first user)

    def __post_init__(self) -> None:
        if not self.ks:
            raise ValueError("eval.ks: give at least one cut-off k")

    @property
    def label(self) -> str:
        """The key infix of this protocol: "" for full ranking, "sampled100_" for NCF's."""
        return "" if self.protocol == "full" else f"sampled{self.sampled_negatives}_"


def metric_names(cfg: RankingConfig, *, psp: bool = True) -> list[str]:
    """The metrics ``evaluate_ranking`` reports for ``cfg``, without prefix and label."""
    if cfg.protocol == "sampled":
        return [f"{m}@{k}" for m in ("hr", "ndcg") for k in cfg.ks] + ["mrr", "auc"]
    kinds = ["hr", "ndcg", "recall", "precision"] + (["psp"] if psp else [])
    return [f"{m}@{k}" for m in kinds for k in cfg.ks] + ["mrr"] + (["auc"] if cfg.auc_negatives else [])


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if _distributed()[1] > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def evaluate_ranking(
    score: Scorer,
    *,
    target: UserItems,
    seen: UserItems,
    cfg: RankingConfig,
    prefix: str,
    propensity: np.ndarray | None = None,
    users: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Rank items for every user with a positive in ``target``, ``seen`` items masked out.

    ``propensity``: inverse propensities float [I] (``item_propensity``) for PSP@k; without it
    PSP is not reported. ``users``: the users this worker evaluates, when each worker holds only
    its own users' rows of ``target`` and ``seen``; None when every worker holds them all (it
    then takes every world-th block). ``device``: where the metrics are computed (the scores'
    device, for a GPU model). Returns ``{prefix}_{label}{metric}`` → mean over the users where
    it is defined (a metric defined for none, e.g. with no users at all, is left out), plus
    ``{prefix}_{label}users`` (how many users were evaluated). Collective when distributed.
    """
    rank, world = _distributed()
    if users is None:
        everyone = np.flatnonzero(target.counts() > 0)
        mine = [everyone[s : s + cfg.block_users] for s in range(0, len(everyone), cfg.block_users)][rank::world]
    else:
        users = users[target.counts()[users] > 0]
        mine = [users[s : s + cfg.block_users] for s in range(0, len(users), cfg.block_users)]
    rounds = int(_all_reduce(torch.tensor([len(mine)]), dist.ReduceOp.MAX if world > 1 else None)[0])
    names = metric_names(cfg, psp=propensity is not None)
    sums = torch.zeros(2, len(names) + 1, dtype=torch.float64)  # per metric: sum over users, users counted; last: users
    covered = torch.zeros(len(cfg.ks), target.num_items, dtype=torch.int32)
    weights = torch.as_tensor(propensity, dtype=torch.float64, device=device) if propensity is not None else None
    with progress_bar(total=rounds, desc=f"{prefix} ranking", unit="block") if rank == 0 else nullcontext() as bar:
        for j in range(rounds):
            block = mine[j] if j < len(mine) else np.zeros(1, np.int64)  # out of blocks: a padding block
            with torch.no_grad():
                scores = score(torch.from_numpy(block))  # [B, I]; called in step on every worker
            if j < len(mine):
                values, top = _block_metrics(scores.to(device), block, target=target, seen=seen, cfg=cfg, weights=weights)
                for m, name in enumerate(names):
                    defined = ~torch.isnan(values[name])
                    sums[0, m] += values[name][defined].sum().item()
                    sums[1, m] += defined.sum().item()
                sums[:, -1] += len(block)
                for i, k in enumerate(cfg.ks if top is not None else []):
                    ranked = top[:, :k].reshape(-1).cpu()
                    covered[i, ranked[ranked >= 0]] = 1
            if bar is not None:
                bar.update(1)
    _all_reduce(sums)
    out = {f"{prefix}_{cfg.label}{name}": s / n for name, s, n in zip(names, sums[0].tolist(), sums[1].tolist()) if n > 0}
    if cfg.protocol == "full":
        _all_reduce(covered, dist.ReduceOp.MAX if world > 1 else None)
        out.update({f"{prefix}_coverage@{k}": float(covered[i].sum()) / target.num_items for i, k in enumerate(cfg.ks)})
    out[f"{prefix}_{cfg.label}users"] = int(sums[0, -1])
    return out


def _block_metrics(
    scores: torch.Tensor,
    block: np.ndarray,
    *,
    target: UserItems,
    seen: UserItems,
    cfg: RankingConfig,
    weights: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    device = scores.device
    positives = tuple(torch.from_numpy(a).to(device) for a in target.block(block))
    masked = tuple(torch.from_numpy(a).to(device) for a in seen.block(block))
    n_neg = cfg.sampled_negatives if cfg.protocol == "sampled" else cfg.auc_negatives
    negatives = None
    if n_neg:
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + int(block[0]))
        excluded = (torch.cat([positives[0], masked[0]]), torch.cat([positives[1], masked[1]]))
        negatives = sample_negatives(excluded, tuple(scores.shape), n_neg, generator)
    if cfg.protocol == "sampled":
        assert negatives is not None
        return sampled_ranking_metrics(scores, positives=positives, negatives=negatives, ks=cfg.ks), None
    return full_ranking_metrics(scores, positives=positives, seen=masked, ks=cfg.ks, weights=weights, negatives=negatives)
