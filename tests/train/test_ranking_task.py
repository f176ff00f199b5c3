"""The top-k task on real gloo ranks with real TorchRec sharding: data owned by user, training
that ranks better than chance, and exported factors that reproduce the run's test metrics.
(That a seen item never reaches a top-k list is tested in tests/eval.)"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.data.partition import by_user
from distrec.eval.factors import exported_scorer
from distrec.eval.holdout import Holdout
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.runtime.session import LocalSession
from distrec.train.config import TrainConfig
from distrec.train.worker import train_worker
from tests.helpers import run_ranks, tiny_synthetic, training_seed, untrained_metrics

# Training's least gain in val nDCG@10 over the untrained model, across seeds 0-4 and all three
# ranking models here (this test's two, LightGCN's): 0.17 (from ≈ 0.06, as random scores).
GAIN = 0.1

MODELS = {
    "mf_bpr": {"name": "mf_bpr", "dim": 16, "init_std": 0.1, "l2": 0.0001},
    "neumf": {"name": "neumf", "gmf_dim": 8, "mlp_dim": 8, "layers": [16, 8], "init_std": 0.1},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out)
    return out


def _pairs_by_user(data: str) -> tuple[np.ndarray, np.ndarray]:
    ds = InteractionDataset(data)
    mine = by_user(ds.read(split=None, parts=["train"], rank=dist.get_rank(), world=dist.get_world_size()))
    assert np.all(mine.user % dist.get_world_size() == dist.get_rank())
    return mine.user, mine.item


def test_each_worker_gets_exactly_its_users_pairs(dataset):
    parts = run_ranks(_pairs_by_user, 2, dataset)
    everyone = InteractionDataset(dataset).read(split=None, parts=["train"])
    got = np.sort(np.concatenate([u * 1000 + i for u, i in parts]))
    np.testing.assert_array_equal(got, np.sort(everyone.user * 1000 + everyone.item))


def _train(data: str, out: str, model: dict, loss: str, sampler: str) -> dict:
    cfg = from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": model,
            "ranking": {"loss": loss, "negatives": 4 if loss == "sampled_softmax" else 1, "sampler": sampler},
            "train": {
                "epochs": 4,
                "batch_size": 256,
                "early_stopping_metric": "val_ndcg@10",
                "early_stopping_mode": "max",
                "patience": 4,
                "seed": training_seed(),
            },
            "optim": {"sparse": "rowwise_adagrad", "sparse_lr": 0.1, "dense": "adam", "dense_lr": 0.005},
            "output_dir": out,
        },
    )
    untrained = untrained_metrics(cfg)["val_ndcg@10"]  # the model this run starts from
    session = LocalSession(out + "-ckpt")
    result = train_worker(cfg, session)
    return {**result, "val": [r["val_ndcg@10"] for r in session.reports], "untrained": untrained}


def _random_ndcg(data: str) -> float:
    holdout = Holdout.read(InteractionDataset(data))
    gen = torch.Generator().manual_seed(0)
    score = lambda users: torch.rand(len(users), holdout.train.num_items, generator=gen)  # noqa: E731
    return evaluate_ranking(score, target=holdout.val, seen=holdout.seen("val"), cfg=RankingConfig(), prefix="val")["val_ndcg@10"]


@pytest.mark.slow
@pytest.mark.parametrize("model, loss, sampler", [("mf_bpr", "bpr", "uniform"), ("neumf", "sampled_softmax", "popularity")])
def test_two_workers_learn_to_rank(dataset, tmp_path, model, loss, sampler):
    out = str(tmp_path / "run")
    result = run_ranks(_train, 2, dataset, out, MODELS[model], loss, sampler)[0]
    val, untrained, chance = result["val"], result["untrained"], _random_ndcg(dataset)
    # training lifts val nDCG@10 well above the untrained model's (which epoch is best varies
    # with the seed on this tiny set: no epoch order is asserted), and above random scores
    assert max(val) > untrained + GAIN, (val, untrained)
    assert result["val_ndcg@10"] > chance + 0.05, (val, chance)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["test_ndcg@10"] == pytest.approx(result["test_ndcg@10"])
    assert metrics["test_users"] > 0
    if model == "mf_bpr":  # the exported factors are the model: they reproduce its test ranking
        holdout = Holdout.read(InteractionDataset(dataset))
        again = evaluate_ranking(
            exported_scorer(out),
            target=holdout.test,
            seen=holdout.seen("test"),
            cfg=RankingConfig(ks=[10, 100]),
            prefix="test",
            propensity=holdout.propensity(),
        )
        for key in ("test_ndcg@10", "test_hr@100", "test_psp@10"):
            assert again[key] == pytest.approx(result[key], abs=1e-6), key
