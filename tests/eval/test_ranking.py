"""Top-k evaluation: metric definitions on hand-computed cases, seen-item masking, the sampled
protocol's label, the fast path against a slow reference, and 2 gloo ranks against 1 process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.data.user_items import UserItems
from distrec.eval.ranking import RankingConfig, evaluate_ranking, metric_names
from distrec.eval.ranking_metrics import full_ranking_metrics, item_propensity, sample_negatives
from tests.helpers import run_ranks

L3, L6 = 1 / math.log2(3), 1 / math.log2(6)


def _items(rows: list[list[int]], num_items: int) -> UserItems:
    user = [u for u, items in enumerate(rows) for _ in items]
    item = [i for items in rows for i in items]
    return UserItems.from_pairs(np.array(user, np.int64), np.array(item, np.int64), num_users=len(rows), num_items=num_items)


def _table(scores: np.ndarray):
    table = torch.tensor(scores, dtype=torch.float32)
    return lambda users: table[users]


# User 0 has no positive (not evaluated). User 1: scores fall with the item index, item 0 is
# seen, items 2 and 5 are positives; the ranking after masking is 1, 2, 3, 4, 5.
HAND_SCORES = np.array([[0.1] * 6, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
HAND_TARGET = _items([[], [2, 5]], 6)
HAND_SEEN = _items([[3], [0]], 6)
HAND_WEIGHTS = np.array([1.0, 1.0, 3.0, 1.0, 1.0, 2.0])


def test_full_ranking_metrics_by_hand():
    cfg = RankingConfig(ks=[1, 3, 5], auc_negatives=100)  # more negatives than items: all of them
    m = evaluate_ranking(_table(HAND_SCORES), target=HAND_TARGET, seen=HAND_SEEN, cfg=cfg, prefix="test", propensity=HAND_WEIGHTS)
    expected = {
        "test_hr@1": 0.0,
        "test_ndcg@1": 0.0,
        "test_recall@1": 0.0,
        "test_precision@1": 0.0,
        "test_psp@1": 0.0,
        "test_hr@3": 1 / 2,
        "test_recall@3": 1 / 2,
        "test_precision@3": 1 / 3,
        "test_ndcg@3": L3 / (1 + L3),  # ideal DCG over min(2, 3) = 2 positions
        "test_psp@3": (3.0 / 2) / (3.0 + 2.0),  # hit item 2 (w=3) / min(n, k), over the best sum w = 3 + 2
        "test_hr@5": 1.0,
        "test_recall@5": 1.0,
        "test_precision@5": 2 / 5,
        "test_ndcg@5": (L3 + L6) / (1 + L3),
        "test_psp@5": ((3.0 + 2.0) / 2) / (3.0 + 2.0),
        "test_mrr": 1 / 2,  # item 1 outranks the best positive
        "test_auc": (2 / 3 + 0) / 2,  # negatives 1, 3, 4 (.8 .6 .5): item 2 (.7) beats two, item 5 (.4) none
        "test_coverage@1": 1 / 6,
        "test_coverage@3": 3 / 6,
        "test_coverage@5": 5 / 6,  # only user 1 is evaluated
        "test_users": 1,
    }
    assert set(m) == set(expected)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_sampled_protocol_by_hand_and_label():
    cfg = RankingConfig(ks=[1, 3], protocol="sampled", sampled_negatives=100)
    m = evaluate_ranking(_table(HAND_SCORES), target=HAND_TARGET, seen=HAND_SEEN, cfg=cfg, prefix="test")
    # each positive against the negatives 1, 3, 4 only: item 2 has rank 1, item 5 rank 3
    expected = {
        "test_sampled100_hr@1": 0.0,
        "test_sampled100_ndcg@1": 0.0,
        "test_sampled100_hr@3": 1 / 2,
        "test_sampled100_ndcg@3": (1 / math.log2(3)) / 2,
        "test_sampled100_mrr": (1 / 2 + 1 / 4) / 2,
        "test_sampled100_auc": 1 / 3,
        "test_sampled100_users": 1,
    }
    assert m == pytest.approx(expected)
    assert not any(k.startswith("test_hr") or "coverage" in k for k in m)  # never mistaken for full ranking


def test_ties_count_against_the_positive_in_the_sampled_protocol():
    cfg = RankingConfig(ks=[1], protocol="sampled")
    m = evaluate_ranking(lambda users: torch.zeros(len(users), 6), target=HAND_TARGET, seen=HAND_SEEN, cfg=cfg, prefix="val")
    assert m["val_sampled100_hr@1"] == 0.0 and m["val_sampled100_auc"] == 0.5


def test_propensity_formula():
    # Jain et al. 2016 with A = 0.55, B = 1.5: C = (ln N - 1)(B + 1)^A, 1/p = 1 + C (N_i + B)^-A
    w = item_propensity(np.array([0, 10]), 1000)
    c = (math.log(1000) - 1) * 2.5**0.55
    assert w == pytest.approx([1 + c * 1.5**-0.55, 1 + c * 11.5**-0.55])
    assert w[0] > w[1] > 1  # rare items weigh more


def test_seen_items_never_in_top_k():
    rng = np.random.default_rng(0)
    users, items = 40, 30
    seen = _items([list(rng.choice(items, size=rng.integers(0, 26), replace=False)) for _ in range(users)], items)
    target = _items([list(rng.choice(items, size=3, replace=False)) for _ in range(users)], items)
    scores = torch.rand(users, items, generator=torch.Generator().manual_seed(0))
    scores[torch.from_numpy(seen.block(np.arange(users))[0]), torch.from_numpy(seen.block(np.arange(users))[1])] += (
        10.0  # seen items score highest
    )
    all_users = np.arange(users)
    _, top = full_ranking_metrics(
        scores,
        positives=tuple(map(torch.from_numpy, target.block(all_users))),
        seen=tuple(map(torch.from_numpy, seen.block(all_users))),
        ks=[10],
    )
    for u in range(users):
        ranked = [i for i in top[u].tolist() if i >= 0]
        assert not set(ranked) & set(seen.items_of(u).tolist())
        assert len(ranked) == min(10, items - len(seen.items_of(u)))  # all unseen items fill the list first


def test_negatives_exclude_interactions_and_do_not_repeat():
    excluded = (torch.tensor([0, 0, 0, 1]), torch.tensor([1, 2, 3, 0]))
    items, valid = sample_negatives(excluded, (2, 6), 4, torch.Generator().manual_seed(1))
    assert valid.tolist() == [[True, True, True, False], [True, True, True, True]]  # row 0 has only 3 candidates
    assert set(items[0][valid[0]].tolist()) == {0, 4, 5}
    assert 0 not in items[1].tolist() and len(set(items[1].tolist())) == 4


# -- the fast path against a slow, obviously correct reference -------------------------------
def _random_case(seed: int, users: int = 17, items: int = 12):
    rng = np.random.default_rng(seed)
    seen = [list(rng.choice(items, size=rng.integers(0, 6), replace=False)) for _ in range(users)]
    target = []
    for u in range(users):
        free = [i for i in range(items) if i not in seen[u]]
        target.append([] if u % 5 == 0 else list(rng.choice(free, size=rng.integers(1, 5), replace=False)))
    scores = rng.normal(size=(users, items))
    weights = item_propensity(rng.integers(0, 50, size=items), 500)
    return scores, _items(target, items), _items(seen, items), weights


def _reference(scores, target: UserItems, seen: UserItems, weights, ks) -> dict[str, float]:
    """Loops over users and ranks, straight from the definitions; every unseen non-positive
    item is a negative (the configs below ask for more negatives than there are items)."""
    per: dict[str, list[float]] = {}
    covered = {k: set() for k in ks}
    for u in range(len(scores)):
        pos, masked = set(target.items_of(u).tolist()), set(seen.items_of(u).tolist())
        if not pos:
            continue
        order = sorted((i for i in range(scores.shape[1]) if i not in masked), key=lambda i: -scores[u, i])
        negs = [i for i in order if i not in pos]
        n = len(pos)
        for k in ks:
            top = order[:k]
            covered[k] |= set(top)
            hits = [i in pos for i in top]
            per.setdefault(f"hr@{k}", []).append(sum(hits) / min(n, k))
            per.setdefault(f"recall@{k}", []).append(sum(hits) / n)
            per.setdefault(f"precision@{k}", []).append(sum(hits) / k)
            dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
            per.setdefault(f"ndcg@{k}", []).append(dcg / sum(1 / math.log2(j + 2) for j in range(min(n, k))))
            best = sum(sorted((weights[i] for i in pos), reverse=True)[: min(n, k)])
            per.setdefault(f"psp@{k}", []).append(sum(weights[i] for i in top if i in pos) / min(n, k) / best)
        first = next(j for j, i in enumerate(order) if i in pos)
        per.setdefault("mrr", []).append(1 / (first + 1))
        pairs = [
            (1.0 if scores[u, p] > scores[u, q] else 0.5 if scores[u, p] == scores[u, q] else 0.0) for p in pos for q in negs
        ]
        per.setdefault("auc", []).append(sum(pairs) / len(pairs))
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out.update({f"coverage@{k}": len(c) / scores.shape[1] for k, c in covered.items()})
    return out


def _reference_sampled(scores, target: UserItems, seen: UserItems, ks) -> dict[str, float]:
    per: dict[str, list[float]] = {}
    for u in range(len(scores)):
        pos, masked = set(target.items_of(u).tolist()), set(seen.items_of(u).tolist())
        if not pos:
            continue
        negs = [i for i in range(scores.shape[1]) if i not in pos and i not in masked]
        ranks = [sum(scores[u, q] >= scores[u, p] for q in negs) for p in pos]
        for k in ks:
            per.setdefault(f"hr@{k}", []).append(np.mean([r < k for r in ranks]))
            per.setdefault(f"ndcg@{k}", []).append(np.mean([(r < k) / math.log2(r + 2) for r in ranks]))
        per.setdefault("mrr", []).append(np.mean([1 / (r + 1) for r in ranks]))
        per.setdefault("auc", []).append(np.mean([np.mean([scores[u, p] > scores[u, q] for q in negs]) for p in pos]))
    return {k: float(np.mean(v)) for k, v in per.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference(seed):
    scores, target, seen, weights = _random_case(seed)
    ks = [1, 3, 5, 20]
    cfg = RankingConfig(ks=ks, block_users=4, auc_negatives=100)
    fast = evaluate_ranking(_table(scores), target=target, seen=seen, cfg=cfg, prefix="t", propensity=weights)
    slow = _reference(scores, target, seen, weights, ks)
    assert fast.pop("t_users") == int((target.counts() > 0).sum())
    assert fast == pytest.approx({f"t_{k}": v for k, v in slow.items()}, abs=1e-6)

    sampled = RankingConfig(ks=ks, block_users=4, protocol="sampled", sampled_negatives=100)
    fast = evaluate_ranking(_table(scores), target=target, seen=seen, cfg=sampled, prefix="t")
    fast.pop("t_sampled100_users")
    slow = _reference_sampled(scores, target, seen, ks)
    assert fast == pytest.approx({f"t_sampled100_{k}": v for k, v in slow.items()}, abs=1e-6)


def test_metric_names_are_what_is_reported():
    scores, target, seen, weights = _random_case(3)
    for cfg in (RankingConfig(ks=[2, 4]), RankingConfig(ks=[2], protocol="sampled")):
        m = evaluate_ranking(_table(scores), target=target, seen=seen, cfg=cfg, prefix="v", propensity=weights)
        assert {f"v_{cfg.label}{n}" for n in metric_names(cfg)} <= set(m)


# -- distributed: 2 gloo ranks give the single-process result --------------------------------
def _evaluate_case(seed: int, own_users: bool) -> dict[str, float]:
    scores, target, seen, weights = _random_case(seed, users=50, items=40)
    cfg = RankingConfig(ks=[5, 10], block_users=7, auc_negatives=8)  # 7 blocks: ranks get 4 and 3
    users = None
    if own_users:  # each rank evaluates (and would only need the rows of) users 0-6, 14-20, ... or 7-13, ...
        users = np.arange(50)[(np.arange(50) // 7) % dist.get_world_size() == dist.get_rank()]
    return evaluate_ranking(_table(scores), target=target, seen=seen, cfg=cfg, prefix="test", propensity=weights, users=users)


def _both_ways(seed: int) -> tuple[dict[str, float], dict[str, float]]:
    return _evaluate_case(seed, False), _evaluate_case(seed, True)


def test_two_ranks_match_one_process():
    single = _evaluate_case(5, False)  # no process group
    assert single["test_users"] == 40
    for shared, own in run_ranks(_both_ways, 2, 5):
        assert shared == pytest.approx(single, abs=1e-12)
        # ranks passing their own users agree on all but AUC (other blocks, so other negatives)
        assert own.pop("test_auc") == pytest.approx(single["test_auc"], abs=0.05)
        assert own == pytest.approx({k: v for k, v in single.items() if k != "test_auc"}, abs=1e-12)
