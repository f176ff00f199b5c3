"""MF-BPR and NeuMF, sharded on 2 gloo ranks: the all-item scorer (a collective, NeuMF's with
its first MLP layer split into user and item halves) gives the same scores as the training
forward on the same (user, item) pairs."""

from __future__ import annotations

import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.models.mf_bpr import MFBPRConfig
from distrec.models.neumf import NeuMFConfig
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.train.config import OptimConfig, ShardingConfig
from distrec.train.sharding import shard_model
from tests.helpers import run_ranks

USERS, ITEMS = 37, 23
CONFIGS = {
    "mf_bpr": (MFBPRConfig, {"name": "mf_bpr", "dim": 6, "init_std": 0.5, "l2": 0.1}),
    "neumf": (NeuMFConfig, {"name": "neumf", "gmf_dim": 5, "mlp_dim": 6, "layers": [7, 3], "init_std": 0.5, "l2": 0.1}),
}


def _scores() -> dict[str, tuple[list, list]]:
    return {name: _model_scores(name) for name in sorted(CONFIGS)}


def _model_scores(name: str) -> tuple[list, list]:
    cls, raw = CONFIGS[name]
    torch.manual_seed(0)  # the dense layers start equal on every rank
    model = build_model(from_dict(cls, raw), ModelContext(USERS, ITEMS, 0.0), torch.device("meta"))
    dmp, _ = shard_model(
        model, optim=OptimConfig(sparse="sgd", sparse_lr=0.1), sharding=ShardingConfig(), device=torch.device("cpu"), seed=3
    )
    model = dmp.module
    rank = dist.get_rank()
    users = torch.arange(rank, USERS, 2)  # each rank asks for different users ...
    items = torch.randint(0, ITEMS, (len(users), 4), generator=torch.Generator().manual_seed(rank))
    with torch.no_grad():
        pair, reg = dmp(users, items)  # [B, 4], [B]
        full = model.scorer()(users)  # [B, I]; ... and the scorer is called in step
    assert full.shape == (len(users), ITEMS) and reg.shape == (len(users),) and bool((reg > 0).all())
    return pair.tolist(), full.gather(1, items).tolist()


def test_scorer_matches_the_training_forward():
    for per_rank in run_ranks(_scores, 2):
        for name, (pair, gathered) in per_rank.items():
            torch.testing.assert_close(torch.tensor(pair), torch.tensor(gathered), atol=1e-5, rtol=1e-5, msg=name)
