"""``train.global_batch_size``: the same global batch, and the same update, on any number of
workers, on real gloo ranks with real TorchRec sharding (distrec/train/batches.py).

- every training row is in exactly one batch per epoch while the world size changes between
  epochs (2 → 1 → 3 workers, as an elastic run resumed at an epoch boundary), for each rule a
  task shares its rows by: row groups (the rating task), users (content models, top-k tasks),
  one global shuffle (retrieval); each step reads the global batch over all workers;
- one step on 2 workers equals the same step on 1 worker, tables and dense parameters, when
  the global batch does not split evenly (the workers' loss scaling);
- training runs with the same global batch on 1 and 2 workers reach the same validation RMSE
  within ``RMSE_TOL``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
import torch.distributed as dist

from distrec.config import ConfigError, from_dict
from distrec.data.dataset import InteractionDataset
from distrec.data.partition import batch_share
from distrec.errors import UserError
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.runtime.session import LocalSession
from distrec.storage.embeddings import read_embeddings
from distrec.train.batches import EpochTotals, rating_batches
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.export import export_tables
from distrec.train.ranking_task import RankingTask
from distrec.train.retrieval import RetrievalTask
from distrec.train.sharding import shard_model
from distrec.train.tasks import RatingTask
from distrec.train.worker import _dense_optimizer, train_worker
from tests.helpers import run_ranks, tiny_synthetic, training_seed

# The largest difference in validation RMSE after each of 3 epochs between 1 and 2 workers with
# the same global batch (256; MF, row-wise Adagrad and SGD), seeds 0-2: 0.0060 (the RMSE goes
# ≈ 0.97 → 0.93). The two runs draw other batches (each worker shuffles its own rows), so they
# agree as two seeds do, not to float precision. With train.batch_size=256 per worker instead
# (a global batch of 512 on 2 workers) SGD's runs differ by 0.024-0.027 (row-wise Adagrad's,
# nearly blind to the batch size here, by 0.008).
RMSE_TOL = 0.015


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=3000)
    return out


def _config(data: str, model: dict | None = None, **train) -> TrainConfig:
    return from_dict(TrainConfig, {
        "data": {"path": data},
        "model": model or {"name": "mf", "dim": 8, "init_std": 0.1},
        "train": {"epochs": 3, "eval_batch_size": 1024, "seed": training_seed(), **train},
        "optim": {"sparse": "rowwise_adagrad", "sparse_lr": 0.05},
        "output_dir": "unused",
    })  # fmt: skip


def test_one_batch_size_at_a_time_and_at_least_a_row_per_worker(dataset):
    with pytest.raises(ConfigError, match="train.batch_size=256 .* and train.global_batch_size=512"):
        _config(dataset, batch_size=256, global_batch_size=512)
    assert _config(dataset).train.global_batch(3) == 8192 * 3  # the default: batch_size 8192 per worker
    assert _config(dataset, batch_size=100).train.global_batch(3) == 300
    cfg = _config(dataset, global_batch_size=2)
    assert cfg.train.global_batch(1) == cfg.train.global_batch(2) == 2
    with pytest.raises(UserError, match="train.global_batch_size=2 is smaller than the 3 workers"):
        cfg.train.global_batch(3)


# -- every row once per epoch across resizes ------------------------------------------------
GLOBAL_BATCH = 100  # does not split evenly over 3 workers


def _epoch_batches(data: str, epoch: int) -> dict[str, list]:
    """This worker's batches of ``epoch`` in each task: per step its real (user, item) pairs and
    the batch's size."""
    ds = InteractionDataset(data)
    split = ds.resolve_split(None)
    cfg = _config(data, global_batch_size=GLOBAL_BATCH)
    towers = _config(data, {"name": "two_tower", "dim": 16, "id_dim": 8, "history": 4}, global_batch_size=GLOBAL_BATCH)
    out: dict[str, list] = {}
    for name, task in (
        ("row_groups", RatingTask(cfg, ds, split)),
        ("by_user", RatingTask(cfg, ds, split, needs=("histories",))),
        ("ranking", RankingTask(cfg, ds, split)),
    ):
        out[name] = [
            (np.stack([b.user[b.weight > 0].numpy(), b.item[b.weight > 0].numpy()], 1), len(b.weight))
            for b in task.batches(epoch)
        ]
    retrieval = RetrievalTask(towers, ds, split)
    seq = retrieval.train
    row_user = np.repeat(np.arange(len(seq.indptr) - 1), np.diff(seq.indptr))
    _, _, batches = retrieval.batches(epoch)
    out["everything"] = [
        (np.stack([row_user[rows[w > 0]], seq.item[rows[w > 0]]], 1), len(w)) for rows, w in ((r, w.numpy()) for r, w in batches)
    ]
    return out


def _sorted(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort(pairs.T[::-1])]


def test_every_training_row_once_per_epoch_across_resizes(dataset):
    train = InteractionDataset(dataset).read(split=None, parts=["train"])
    everything = _sorted(np.stack([train.user, train.item], 1))
    assert len(np.unique(everything, axis=0)) == len(everything)  # a pair names one row
    orders = {}
    for epoch, world in enumerate((2, 1, 3)):  # an elastic run: resumed at each epoch boundary on another world size
        ranks = run_ranks(_epoch_batches, world, dataset, epoch)
        shares = [batch_share(GLOBAL_BATCH, rank=r, world=world) for r in range(world)]
        assert sum(s.rows for s in shares) == GLOBAL_BATCH
        for kind in ranks[0]:
            steps = [ranks[r][kind] for r in range(world)]
            assert len({len(s) for s in steps}) == 1, kind  # every worker runs the same number of steps
            read = _sorted(np.concatenate([pairs for s in steps for pairs, _ in s]))
            np.testing.assert_array_equal(read, everything, err_msg=f"{kind}, epoch {epoch} on {world} workers")
            for rank, share in enumerate(shares):
                real = [len(pairs) for pairs, _ in steps[rank]]
                assert {size for _, size in steps[rank]} == {share.shape}, kind
                # full steps of its share, then one partial step, then padding only
                full = sum(n == share.rows for n in real)
                assert all(n == share.rows for n in real[:full]) and all(n == 0 for n in real[full + 1 :]), (kind, real)
            assert sum(len(steps[r][0][0]) for r in range(world)) == GLOBAL_BATCH  # the first step: the global batch
            orders[kind, epoch] = np.concatenate([pairs for pairs, _ in steps[0]])[:20]
    for kind in ranks[0]:  # each epoch draws another order
        assert not np.array_equal(orders[kind, 0], orders[kind, 1]), kind


# -- one step: the same update on 1 and 2 workers -------------------------------------------
STEP_BATCH = 257  # 129 + 128 rows on 2 workers (batches of 129, one padded row)


def _one_step(data: str, out: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = InteractionDataset(data)
    train = ds.read(split=None, parts=["train"])
    share = batch_share(STEP_BATCH, rank=rank, world=world)
    start = rank * (STEP_BATCH // world) + min(rank, STEP_BATCH % world)  # the workers' parts, in rank order
    mine = dataclasses.replace(
        train, user=train.user[start : start + share.rows], item=train.item[start : start + share.rows],
        rating=train.rating[start : start + share.rows], ts=None,
    )  # fmt: skip
    ctx = ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5)
    cfg = _config(data)
    optim = OptimConfig(sparse="sgd", sparse_lr=0.5, dense="sgd", dense_lr=0.1)
    # user_bias data-parallel: a replicated table the dense optimizer steps (DDP's average)
    types = {"user": "table_wise", "item": "column_wise", "user_bias": "data_parallel", "item_bias": "table_wise"}
    model = build_model(cfg.model, ctx, torch.device("meta"))
    dmp, _ = shard_model(model, optim=optim, sharding=ShardingConfig(types=types), device=torch.device("cpu"), seed=7)
    opt = _dense_optimizer(dmp, optim)
    export_tables(dmp, dmp.module, output_dir=f"{out}/before", dataset=ds, meta=dmp.module.export_meta())
    batch = next(rating_batches(mine, batch_size=share.shape, rows=share.rows, steps=1, rng=None))
    loss = dmp(dmp.module.features(batch.user, batch.item), batch.rating, batch.weight)
    EpochTotals(share).step(loss, opt, rows=share.shape, real=batch.real_rows)
    export_tables(dmp, dmp.module, output_dir=f"{out}/after", dataset=ds, meta=dmp.module.export_meta())


def test_one_step_on_two_workers_equals_the_step_on_one(dataset, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_ranks(_one_step, 1, dataset, one)
    run_ranks(_one_step, 2, dataset, two)
    for table in ("user", "item"):
        start = read_embeddings(f"{one}/before/embeddings/{table}")
        np.testing.assert_array_equal(start.vector, read_embeddings(f"{two}/before/embeddings/{table}").vector)
        a, b = read_embeddings(f"{one}/after/embeddings/{table}"), read_embeddings(f"{two}/after/embeddings/{table}")
        moved = [(a.vector - start.vector, b.vector - start.vector), (a.columns["bias"], b.columns["bias"])]
        for x, y in moved:  # the step itself (biases start at 0)
            assert np.abs(x).max() > 1e-3  # the step changed something real
            np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-7)
        mean = start.meta["global_mean"]
        assert b.meta["global_mean"] - mean == pytest.approx(a.meta["global_mean"] - mean, rel=1e-4)


# -- training: the same validation RMSE on 1 and 2 workers ----------------------------------
def _train(data: str, root: str, sparse: str) -> list[float]:
    cfg = _config(data, global_batch_size=256, export_embeddings=False)
    cfg = dataclasses.replace(cfg, output_dir=f"{root}/run", optim=dataclasses.replace(cfg.optim, sparse=sparse))
    if sparse == "sgd":
        cfg.optim.sparse_lr = 5.0  # the step per rating is sparse_lr / global batch
    session = LocalSession(f"{root}/ckpt")
    with contextlib.redirect_stdout(None):
        train_worker(cfg, session)
    return [r["val_rmse"] for r in session.reports]


@pytest.mark.parametrize("sparse", ["rowwise_adagrad", "sgd"])
def test_the_same_global_batch_reaches_the_same_validation_rmse_on_1_and_2_workers(dataset, tmp_path, sparse):
    one = run_ranks(_train, 1, dataset, str(tmp_path / "one"), sparse)[0]
    two = run_ranks(_train, 2, dataset, str(tmp_path / "two"), sparse)[0]
    assert one[-1] < one[0] - 0.01  # it trained
    np.testing.assert_allclose(two, one, atol=RMSE_TOL, rtol=0)
