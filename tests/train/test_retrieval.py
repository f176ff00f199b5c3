"""Two-tower retrieval in the trainer: histories, 2 gloo ranks with TorchRec sharding (loss
falls, exported vectors re-read rank exactly as the model does), and the job's whole run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset, Interactions
from distrec.data.user_items import UserItems
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.models.registry import build_model
from distrec.storage.embeddings import read_embeddings
from distrec.train.config import TrainConfig
from distrec.train.retrieval import RetrievalTask, sequences, windows
from distrec.train.sharding import shard_model
from distrec.train.worker import _dense_optimizer
from tests.helpers import job_on_ranks, run_ranks, tiny_synthetic, tiny_text_encoder, training_seed

K = 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=4000, split="leave-last-out")
    return out


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    return tiny_text_encoder(str(tmp_path_factory.mktemp("bert") / "tiny-bert"))


def _config(data: str, out: str, encoder: str, **train) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {
                "name": "two_tower",
                "dim": 16,
                "id_dim": 8,
                "history": 8,
                "layers": 1,
                "heads": 2,
                "ffn": 32,
                "dropout": 0.0,
                "temperature": 0.1,
                "eval_ks": [10, K],
                "text": {"model": encoder, "cache_dir": os.path.join(out, "text-cache")},
            },
            "train": {"epochs": 2, "batch_size": 128, "eval_batch_size": 256, "seed": training_seed(), **train},
            "optim": {"sparse_lr": 0.1, "dense_lr": 0.005},
            "sharding": {"types": {"item": "table_wise"}},
            "ray": {"num_workers": 2, "storage_path": os.path.join(out, "ray")},
            "output_dir": out,
        },
    )


def test_histories_are_time_ordered_right_aligned_and_truncated():
    data = Interactions(
        user=np.array([1, 0, 1, 1, 0]),
        item=np.array([10, 20, 11, 12, 21]),
        rating=np.array([5.0, 1.0, 2.5, 4.0, 3.0], np.float32),
        ts=np.array([30, 5, 10, 20, 1]),
    )
    seq = sequences(data, num_users=3, rating_max=5.0)
    np.testing.assert_array_equal(seq.indptr, [0, 2, 5, 5])
    np.testing.assert_array_equal(seq.item, [21, 20, 11, 12, 10])  # by user, then time
    np.testing.assert_array_equal(seq.bucket, [7, 3, 6, 9, 11])  # round(10 r / 5) + 1
    items, buckets = windows(seq, start=seq.indptr[[0, 1, 2]], stop=seq.indptr[[1, 2, 3]], length=2)
    np.testing.assert_array_equal(items.numpy(), [[21, 20], [12, 10], [-1, -1]])  # latest last; user 2 has none
    np.testing.assert_array_equal(buckets.numpy(), [[7, 3], [9, 11], [0, 0]])
    # a training example sees only what came before it: user 1's third item (row 4) has history 11, 12
    items, _ = windows(seq, start=np.array([2]), stop=np.array([4]), length=3)
    np.testing.assert_array_equal(items.numpy(), [[-1, 11, 12]])


def _train_and_export(data: str, out: str, encoder: str) -> dict:
    cfg = _config(data, out, encoder)
    ds = InteractionDataset(data)
    task = RetrievalTask(cfg, ds, ds.resolve_split(None))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, task.context(), torch.device("meta"))
    dmp, _ = shard_model(model, optim=cfg.optim, sharding=cfg.sharding, device=torch.device("cpu"), seed=cfg.train.seed)
    model = dmp.module
    opt = _dense_optimizer(dmp, cfg.optim)
    losses = [task.train_epoch(dmp, model, opt, epoch)["train_loss"] for epoch in range(3)]
    metrics = task.evaluate(dmp, model, "test")
    dmp.eval()
    with torch.no_grad():  # the model's own top-k for every user, from the test-time histories
        items = task.item_matrix(dmp, model)
        scores = task.user_vectors(dmp, model, torch.arange(ds.num_users), "test") @ items.T
    top = torch.topk(scores, K).indices.numpy()
    uris = task.export(dmp, model, output_dir=out, meta={"model": "two_tower"})
    return {"losses": losses, "metrics": metrics, "top": top, "uris": uris, "rank": dist.get_rank()}


def test_two_ranks_loss_falls_and_exported_vectors_rank_identically(dataset, encoder, tmp_path):
    out = str(tmp_path / "out")
    results = run_ranks(_train_and_export, 2, dataset, out, encoder)
    a, b = results
    assert a["losses"] == b["losses"] and a["metrics"] == b["metrics"]  # all-reduced: the same on both ranks
    assert a["losses"][-1] < a["losses"][0] - 0.05, a["losses"]
    np.testing.assert_array_equal(a["top"], b["top"])
    users, items = read_embeddings(a["uris"]["user"], verify="sha256"), read_embeddings(a["uris"]["item"], verify="sha256")
    assert users.vector.shape[0] == InteractionDataset(dataset).num_users and users.raw is not None
    # the model's own top-K is the top-K of the re-read vectors' scores, up to float rounding at
    # the K-th place (numpy's product and the model's round differently: a near-tie may swap)
    scores = users.vector @ items.vector.T
    kth = np.sort(scores, axis=1)[:, -K, None]
    same = (np.take_along_axis(scores, a["top"], axis=1) >= kth - 1e-5).all(axis=1)
    assert same.all(), f"{(~same).sum()} users' top-{K} differ"
    assert {"test_recall@20", "test_pop_recall@20", "test_ndcg@10"} <= set(a["metrics"])


@pytest.mark.slow
def test_a_whole_run_on_two_workers_exports_vectors_that_give_its_test_metrics(dataset, encoder, tmp_path):
    """The job's worker function (early stopping on validation, the test pass, the export) on 2
    gloo ranks, as Ray Train runs it on 2 workers."""
    out = str(tmp_path / "out")
    cfg = _config(dataset, out, encoder, epochs=2, early_stopping_metric=f"val_recall@{K}", early_stopping_mode="max")
    metrics = job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    history = json.load(open(os.path.join(out, "history.json")))
    assert len(history) >= 2 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["num_workers"] == 2 and 0 <= metrics[f"test_recall@{K}"] <= 1 and f"test_pop_recall@{K}" in metrics
    ds = InteractionDataset(dataset)
    users, items = read_embeddings(metrics["embeddings"]["user"]), read_embeddings(metrics["embeddings"]["item"])
    # the re-read vectors give the job's test metrics: same target, same seen items masked
    split = ds.resolve_split(None)
    parts = {p: ds.read(split=split, parts=[p]) for p in ("train", "val", "test")}
    seen = UserItems.from_pairs(
        np.r_[parts["train"].user, parts["val"].user],
        np.r_[parts["train"].item, parts["val"].item],
        num_users=ds.num_users,
        num_items=ds.num_items,
    )
    target = UserItems.from_pairs(parts["test"].user, parts["test"].item, num_users=ds.num_users, num_items=ds.num_items)
    u, v = torch.from_numpy(users.vector), torch.from_numpy(items.vector)
    again = evaluate_ranking(lambda block: u[block] @ v.T, target=target, seen=seen, cfg=RankingConfig(ks=[10, K]), prefix="test")
    for key in (f"test_recall@{K}", "test_ndcg@10", "test_mrr"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
