"""LightGCN on 2 real gloo ranks: the partitioned graph propagation, and the sharded TorchRec
model's scores and one SGD step, against a dense single-process reference; and a short
2-worker training run through the ranking task that learns to rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import Interactions
from distrec.models.bipartite import balanced_bounds, build_graph, propagate
from distrec.models.lightgcn import LightGCNConfig
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.models.tables import init_rows
from distrec.runtime.session import LocalSession
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.ranking_losses import bpr_loss
from distrec.train.sharding import shard_model
from distrec.train.worker import train_worker
from tests.helpers import run_ranks, tiny_synthetic, training_seed, untrained_metrics
from tests.train.test_ranking_task import GAIN, _random_ndcg

USERS, ITEMS, DIM, LAYERS = 7, 5, 3, 3


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    key = np.unique(rng.integers(0, USERS * ITEMS, size=20))
    user, item = key // ITEMS, key % ITEMS
    return np.append(user, USERS - 1), np.append(item, ITEMS - 1)  # the last user and item have an edge


def _dense_adjacency(user: np.ndarray, item: np.ndarray) -> torch.Tensor:
    """Â = D^-1/2 [[0, R], [Rᵀ, 0]] D^-1/2, written out densely."""
    n = USERS + ITEMS
    a = np.zeros((n, n))
    a[user, USERS + item] = a[USERS + item, user] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def _start() -> torch.Tensor:
    return torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(1))


def _weights(rank: int) -> torch.Tensor:
    """A different loss per worker, so each one's gradient matters."""
    return torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(10 + rank))


def _layer_mean(x: torch.Tensor, step) -> torch.Tensor:
    layer, total = x, x
    for _ in range(LAYERS):
        layer = step(layer)
        total = total + layer
    return total / (LAYERS + 1)


def _propagate_on_ranks():
    rank, world = dist.get_rank(), dist.get_world_size()
    user, item = _pairs()
    graph = build_graph(user[rank::world], item[rank::world], num_users=USERS, num_items=ITEMS)  # any split of the pairs
    x = _start().requires_grad_()
    out = _layer_mean(x, lambda e: propagate(e, graph))
    (out * _weights(rank)).sum().backward()
    return out.detach().numpy(), x.grad.numpy(), graph.bounds, graph.adj._nnz()  # numpy: pickled by value


def test_partitioned_propagation_equals_the_dense_reference():
    user, item = _pairs()
    a = _dense_adjacency(user, item)
    x = _start().requires_grad_()
    ref = _layer_mean(x, lambda e: a @ e)
    (ref * (_weights(0) + _weights(1))).sum().backward()  # the loss summed over both workers

    results = run_ranks(_propagate_on_ranks, 2)
    for out, _, _, _ in results:
        torch.testing.assert_close(torch.from_numpy(out), ref.detach())
    torch.testing.assert_close(torch.from_numpy(results[0][1] + results[1][1]), x.grad)  # what TorchRec sums onto the tables
    bounds = results[0][2]
    assert bounds[0] == 0 and bounds[-1] == USERS + ITEMS and 0 < bounds[1] < USERS + ITEMS
    assert sum(r[3] for r in results) == 2 * len(user)  # every directed edge on exactly one worker

    single = build_graph(user, item, num_users=USERS, num_items=ITEMS)  # no process group: one block
    torch.testing.assert_close(single.adj.to_dense(), a)
    torch.testing.assert_close(_layer_mean(_start(), lambda e: propagate(e, single)), ref.detach())


def test_balanced_bounds_split_the_nonzeros_evenly():
    degree = np.array([5, 1, 1, 1, 1, 1, 5, 5])
    bounds = balanced_bounds(degree, 2)
    assert list(bounds[[0, -1]]) == [0, 8]
    halves = [degree[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    assert abs(halves[0] - halves[1]) <= 5


LR, SEED = 0.5, 3
MODEL = LightGCNConfig(dim=DIM, layers=LAYERS, init_std=0.5, l2=0.1)


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(20 + rank)
    return torch.randint(0, USERS, (5,), generator=gen), torch.randint(0, ITEMS, (5, 3), generator=gen)


def _sharded_step():
    """Scores, then one fused-SGD step on this rank's batch, then the ego tables after it."""
    rank, world = dist.get_rank(), dist.get_world_size()
    user, item = _pairs()
    train = Interactions(user[rank::world], item[rank::world], np.ones(len(user[rank::world]), np.float32))
    model = build_model(MODEL, ModelContext(USERS, ITEMS, 0.0, train=train), torch.device("meta"))
    dmp, _ = shard_model(
        model, optim=OptimConfig(sparse="sgd", sparse_lr=LR), sharding=ShardingConfig(), device=torch.device("cpu"), seed=SEED
    )
    model = dmp.module
    users, items = _batch(rank)
    with torch.no_grad():
        full = model.scorer()(users)  # [B, I]
    scores, reg = dmp(users, items)
    (bpr_loss(scores) + reg).mean().backward()  # the fused optimizer updates the tables here
    with torch.no_grad():
        after = model.ego()
    return scores.detach().numpy(), full.gather(1, items).numpy(), after.numpy()


def test_sharded_model_matches_the_dense_reference():
    user, item = _pairs()
    a = _dense_adjacency(user, item)
    spec = build_model(
        MODEL,
        ModelContext(USERS, ITEMS, 0.0, train=Interactions(user, item, np.ones(len(user), np.float32))),
        torch.device("meta"),
    ).tables
    ego = torch.cat([init_rows(t, SEED, 0, t.rows)[:, :DIM] for t in spec]).requires_grad_()
    final = _layer_mean(ego, lambda e: a @ e)
    losses, expected = [], []
    for rank in range(2):
        users, items = _batch(rank)
        nodes = items + USERS
        scores = torch.einsum("bd,bcd->bc", final[users], final[nodes])
        reg = 0.5 * MODEL.l2 * (ego[users].square().sum(1) + ego[nodes].square().sum((1, 2)))
        losses.append((bpr_loss(scores) + reg).mean())
        expected.append(scores.detach())
    (sum(losses) / 2).backward()  # the gradient of the mean over the global batch
    stepped = ego.detach() - LR * ego.grad

    for rank, (scores, gathered, after) in enumerate(run_ranks(_sharded_step, 2)):
        torch.testing.assert_close(torch.from_numpy(scores), expected[rank])
        torch.testing.assert_close(torch.from_numpy(gathered), expected[rank])  # the scorer agrees with the forward
        torch.testing.assert_close(torch.from_numpy(after), stepped)


def _train(data: str, out: str) -> dict:
    cfg = from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {"name": "lightgcn", "dim": 16, "layers": 2, "init_std": 0.1, "l2": 0.0001},
            "ranking": {"loss": "bpr", "negatives": 2},
            "train": {
                "epochs": 4,
                "batch_size": 512,
                "early_stopping_metric": "val_ndcg@10",
                "early_stopping_mode": "max",
                "patience": 4,
                "export_embeddings": False,
                "seed": training_seed(),
            },
            "optim": {"sparse": "adagrad", "sparse_lr": 0.1},
            "output_dir": out,
        },
    )
    untrained = untrained_metrics(cfg)["val_ndcg@10"]  # the model this run starts from
    session = LocalSession(out + "-ckpt")
    result = train_worker(cfg, session)
    return {**result, "val": [r["val_ndcg@10"] for r in session.reports], "untrained": untrained}


@pytest.mark.slow
def test_two_workers_learn_to_rank(tmp_path):
    data = str(tmp_path / "tiny")
    tiny_synthetic(data)
    result = run_ranks(_train, 2, data, str(tmp_path / "run"))[0]
    val, untrained, chance = result["val"], result["untrained"], _random_ndcg(data)
    assert max(val) > untrained + GAIN, (val, untrained)  # well above the untrained model's nDCG
    assert result["val_ndcg@10"] > chance + 0.05, (val, chance)
    assert result["test_ndcg@10"] > chance and result["num_workers"] == 2
