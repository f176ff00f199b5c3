"""The training loop on real gloo ranks with real TorchRec sharding (no Ray: see test_ray.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.runtime.session import LocalSession
from distrec.storage.embeddings import read_embeddings
from distrec.train.batches import rating_batches
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.export import export_tables
from distrec.train.sharding import shard_model
from distrec.train.worker import train_worker
from tests.helpers import job_on_ranks, run_ranks, tiny_synthetic, training_seed, untrained_metrics


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out)
    return out


def _config(data: str, out: str, **overrides) -> TrainConfig:
    raw = {
        "data": {"path": data},
        "model": {"name": "mf", "dim": 8, "init_std": 0.1, "l2": 0.05, "bias_l2": 0.001},
        "train": {"epochs": 3, "batch_size": 512, "eval_batch_size": 1024, "seed": training_seed()},
        "optim": {"sparse": "rowwise_adagrad", "sparse_lr": 0.05},
        "output_dir": out,
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    return from_dict(TrainConfig, raw)


# -- one step: sharded on 2 ranks == unsharded on 1 rank ------------------------------------
def _one_step(data: str, out: str, sharding: str, optimizer: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = InteractionDataset(data)
    rows = ds.read(split=None, parts=["train"])  # every rank sees the same global batch ...
    global_batch = 1024
    ctx = ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5)
    cfg = _config(data, out, optim__sparse=optimizer, optim__sparse_lr=0.5)
    model = build_model(cfg.model, ctx, torch.device("meta"))
    dmp, plan = shard_model(
        model,
        optim=OptimConfig(sparse=optimizer, sparse_lr=0.5, dense="sgd", dense_lr=0.1),
        sharding=ShardingConfig(types={t: sharding for t in ("user", "item", "user_bias", "item_bias")}),
        device=torch.device("cpu"),
        seed=7,
    )
    opt = torch.optim.SGD([dmp.module.mean], lr=0.1)
    batch = next(rating_batches(rows, batch_size=global_batch, steps=1, rng=None))
    share = global_batch // world  # ... and computes its share of it
    sl = slice(rank * share, (rank + 1) * share)
    loss = dmp(dmp.module.features(batch.user[sl], batch.item[sl]), batch.rating[sl], batch.weight[sl])
    loss.backward()
    opt.step()
    export_tables(dmp, dmp.module, output_dir=out, dataset=ds, meta=dmp.module.export_meta())


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
@pytest.mark.parametrize("optimizer", ["sgd", "rowwise_adagrad"])
def test_sharded_step_matches_unsharded(dataset, tmp_path, sharding, optimizer):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_ranks(_one_step, 1, dataset, one, sharding, optimizer)
    run_ranks(_one_step, 2, dataset, two, sharding, optimizer)
    for table in ("user", "item"):
        a = read_embeddings(f"{one}/embeddings/{table}")
        b = read_embeddings(f"{two}/embeddings/{table}")
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.columns["bias"], b.columns["bias"], rtol=1e-5, atol=1e-6)
        assert a.meta["global_mean"] == pytest.approx(b.meta["global_mean"], abs=1e-6)
        assert np.abs(a.vector).sum() > 0  # the step changed something real
        np.testing.assert_array_equal(a.raw, b.raw)


# -- whole runs through train_worker --------------------------------------------------------
def _train(data: str, out: str, ckpt: str, epochs: int, sharding: str | None, merged: bool = False) -> dict:
    types = {"user": sharding, "item": sharding} if sharding else {}  # bias tables: the planner's choice
    # one row per user or item suits an element-wise optimizer (a row-wise one shares the bias's accumulator)
    sgd = {"optim__sparse": "sgd", "optim__sparse_lr": 1.0} if merged else {}
    cfg = _config(data, out, train__epochs=epochs, sharding__types=types, model__bias_in_factor_row=merged, **sgd)
    untrained = untrained_metrics(cfg)  # the model this run starts from
    session = LocalSession(ckpt)
    result = train_worker(cfg, session)
    result["reports"] = session.reports
    result["untrained_val_rmse"] = untrained["val_rmse"]
    return result


@pytest.mark.parametrize("merged", [False, True], ids=["bias-tables", "bias-in-factor-row"])
def test_training_reduces_validation_rmse_and_exports_what_it_predicts(dataset, tmp_path, merged):
    out = str(tmp_path / "run")
    result = run_ranks(_train, 2, dataset, out, str(tmp_path / "ckpt"), 4, "table_wise", merged)[0]
    val = [r["val_rmse"] for r in result["reports"]]
    # training reduces the validation RMSE of the model it starts from (seeds 0-4: by 0.06 or
    # more); whether each epoch improves on the last is not asserted: on tiny data it varies
    assert val[-1] < result["untrained_val_rmse"] - 0.05, (val, result["untrained_val_rmse"])
    ds = InteractionDataset(dataset)
    train, valid = ds.read(split=None, parts=["train"]), ds.read(split=None, parts=["val"])
    baseline = float(np.sqrt(np.mean((valid.rating - train.rating.mean()) ** 2)))  # predict the mean
    assert val[-1] < baseline - 0.05, (val, baseline)
    plan = open(os.path.join(out, "plan.txt")).read()
    assert "table_wise" in plan
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["test_rmse"] == pytest.approx(result["test_rmse"])

    # the exported tables reproduce the test metric exactly
    test = ds.read(split=None, parts=["test"])
    user, item = read_embeddings(f"{out}/embeddings/user"), read_embeddings(f"{out}/embeddings/item")
    mu = user.meta["global_mean"]
    pred = mu + user.columns["bias"][test.user] + item.columns["bias"][test.item]
    pred += np.einsum("nd,nd->n", user.vector[test.user], item.vector[test.item])
    lo, hi = ds.meta["rating"]["min"], ds.meta["rating"]["max"]
    rmse = float(np.sqrt(np.mean((np.clip(pred, lo, hi) - test.rating) ** 2)))
    assert rmse == pytest.approx(result["test_rmse"], abs=1e-5)


def test_resume_from_checkpoint_gives_the_same_next_epoch(dataset, tmp_path):
    straight = run_ranks(_train, 2, dataset, str(tmp_path / "a"), str(tmp_path / "ckpt_a"), 3, None)[0]
    run_ranks(_train, 2, dataset, str(tmp_path / "b"), str(tmp_path / "ckpt_b"), 2, None)
    resumed = run_ranks(_train, 2, dataset, str(tmp_path / "b"), str(tmp_path / "ckpt_b"), 3, None)[0]
    assert [r["epoch"] for r in resumed["reports"]] == [3]  # only the missing epoch ran
    for key in ("train_loss", "val_rmse", "val_mae"):
        assert resumed["reports"][0][key] == pytest.approx(straight["reports"][2][key], rel=1e-6), key
    assert resumed["test_rmse"] == pytest.approx(straight["test_rmse"], rel=1e-6)


def test_early_stopping_restores_the_best_epoch(dataset, tmp_path):
    # a learning rate this high overfits within a few epochs on the tiny set
    cfg = _config(
        dataset,
        str(tmp_path / "run"),
        train__epochs=30,
        train__early_stopping_metric="val_rmse",
        train__patience=2,
        model__l2=0.0,
        model__dim=32,
        optim__sparse_lr=0.5,
    )
    result = job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    assert result["epochs"] < 30  # stopped early
    assert result["best_epoch"] == result["epochs"] - 2  # patience 2
    assert result["restored_best"] is True
