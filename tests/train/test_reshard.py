"""Checkpoints restored on another number of workers, or under other sharding types, on real gloo
ranks with real TorchRec plans (distrec/train/reshard.py).

Each test trains one epoch on W workers (train_worker, checkpoint_00001), then restores that
checkpoint on W′ workers, where TorchRec's planner makes its own plan, and compares with the
same checkpoint restored on W:

- the state itself: every table, every fused optimizer state (gathered whole from the shards),
  the dense parameters and the dense optimizer's state (by parameter name) equal those restored
  on W bit for bit (a changed column split of row-wise Adagrad aside: converted, see
  test_a_forced_layout_change_*);
- the validation metrics right after the restore, before any step, equal those on W within
  ``METRIC_TOL`` (the evaluation sums in another order on another number of workers), and on W
  they equal what the saving run reported for that epoch.

Continuing on W′ is not compared with continuing on W: each worker shuffles its own slice of
the data, so the next epoch on another number of workers draws other batches, even with the same
``train.global_batch_size``; that the same global batch trains alike on 1 and 2 workers, and
that every row is read once per epoch across such resizes, is tests/train/test_global_batch.py.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.models.registry import build_model, model_spec
from distrec.runtime.checkpoint import PROGRESS, load_checkpoint
from distrec.runtime.reshard import resume_message
from distrec.runtime.session import LocalSession
from distrec.train.config import TrainConfig
from distrec.train.sharding import shard_model
from distrec.train.tasks import make_task
from distrec.train.worker import _dense_optimizer, train_worker
from tests.helpers import run_ranks, tiny_synthetic, training_seed

# The largest difference of a validation metric, restored on W′ against W, seen across the
# models and transitions below was below 1e-8 (NCF's RMSE, 2 → 1: the same float32 predictions
# summed in another order); the ranking metrics agree to 1e-15.
METRIC_TOL = 1e-6

MODELS = {
    # MF also keeps one table data-parallel: a replicated dense parameter under the dense optimizer
    "mf": ({"name": "mf", "dim": 8, "init_std": 0.1}, {"user_bias": "data_parallel"}),
    "mf_bpr": ({"name": "mf_bpr", "dim": 16, "init_std": 0.1, "l2": 0.0001}, {}),
    "neumf": ({"name": "neumf", "gmf_dim": 8, "mlp_dim": 8, "layers": [16, 8], "init_std": 0.1}, {}),
    "lightgcn": ({"name": "lightgcn", "dim": 16, "layers": 2, "init_std": 0.1, "l2": 0.0001}, {}),
    "ncf": ({"name": "ncf", "dim": 8, "attention_dim": 8, "hidden": [16], "max_history": 40}, {}),
    "two_tower": ({"name": "two_tower", "dim": 16, "id_dim": 8, "history": 8, "layers": 1, "heads": 2, "ffn": 32,
                   "temperature": 0.1, "eval_ks": [10, 20]}, {}),
}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=4000)
    return out


def _config(
    data: str, out: str, model: dict, *, types: dict | None = None, sparse: str = "rowwise_adagrad", epochs: int = 1
) -> TrainConfig:
    return from_dict(TrainConfig, {
        "data": {"path": data},
        "model": model,
        "train": {"epochs": epochs, "batch_size": 256, "eval_batch_size": 512, "seed": training_seed()},
        "optim": {"sparse": sparse, "sparse_lr": 0.1, "dense": "adam", "dense_lr": 0.01},
        "sharding": {"types": types or {}},
        "output_dir": out,
    })  # fmt: skip


# -- on the ranks ------------------------------------------------------------------------------
def _full(value: torch.Tensor | None, size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A ShardedTensor (or None: no shard here) whole on every worker; a plain tensor as it is."""
    if value is not None and not isinstance(value, ShardedTensor):
        return value.detach().clone()
    out = torch.zeros(size, dtype=dtype)
    for shard in value.local_shards() if value is not None else ():
        out[tuple(slice(o, o + n) for o, n in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True))] = (
            shard.tensor
        )
    dist.all_reduce(out)  # each value comes from one worker, the others add zeros
    return out


def _gathered(dmp, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Everything a checkpoint restores, whole and by name: tables and dense parameters
    (``model/``), fused optimizer state (``fused/``; a worker holds only its tables' entries),
    dense optimizer state (``dense/<parameter>/<key>``)."""
    out = {f"model/{k}": _full(v, tuple(v.size()), v.dtype) for k, v in sorted(dmp.state_dict().items())}
    fused = {f"fused/{p}/{k}": v for p, entries in dmp.fused_optimizer.state_dict()["state"].items() for k, v in entries.items()}
    shapes: list = [None] * dist.get_world_size()
    dist.all_gather_object(shapes, {k: (tuple(v.size()), v.dtype) for k, v in fused.items()})
    for key in sorted(set().union(*shapes)):
        size, dtype = next(s[key] for s in shapes if key in s)
        out[key] = _full(fused.get(key), size, dtype)
    names = {id(p): n for n, p in dmp.named_parameters()}
    for param, state in opt.state.items():
        out.update({f"dense/{names[id(param)]}/{k}": v.clone() for k, v in state.items()})
    return out


def _restore(cfg: TrainConfig, ckpt: str) -> dict:
    """Build this worker's plan for ``cfg``, restore ``ckpt``, gather the state, score val."""
    torch.manual_seed(cfg.train.seed)
    dataset = InteractionDataset(cfg.data.path)
    spec = model_spec(cfg.model)
    task = make_task(cfg, spec, dataset, dataset.resolve_split(cfg.data.split))
    model = spec.build(cfg.model, task.context(), torch.device("meta"))
    dmp, plan = shard_model(model, optim=cfg.optim, sharding=cfg.sharding, device=torch.device("cpu"), seed=cfg.train.seed)
    opt = _dense_optimizer(dmp, cfg.optim)
    progress = load_checkpoint(ckpt, dmp=dmp, dense_opt=opt)
    kinds = {t: s.sharding_type for plans in plan.plan.values() for t, s in plans.items()}
    state = {k: v.numpy() for k, v in _gathered(dmp, opt).items()}  # a tensor would cross to the test in shared memory
    return {"state": state, "val": task.evaluate(dmp, dmp.module, "val"), "progress": progress, "kinds": kinds}


def _train(cfg: TrainConfig, root: str) -> dict:
    """Train (or resume) with checkpoints under ``root``; rank 0's reports and console."""
    console = io.StringIO()
    session = LocalSession(root)
    with contextlib.redirect_stdout(console) if dist.get_rank() == 0 else contextlib.nullcontext():
        train_worker(cfg, session)
    return {"reports": session.reports, "console": console.getvalue()}


def _steps(*steps: tuple) -> list:
    """Several steps on the same ranks (one group of processes): ``(function, *args)`` each."""
    return [fn(*args) for fn, *args in steps]


def _run(world: int, *steps: tuple) -> list:
    """``_steps`` on ``world`` gloo ranks: rank 0's results, restored states as tensors."""
    results = run_ranks(_steps, world, *steps)[0]
    for result in results:
        if "state" in result:
            result["state"] = {k: torch.from_numpy(v) for k, v in result["state"].items()}
    return results


# -- comparisons -------------------------------------------------------------------------------
def _comparable(metrics: dict) -> dict:
    # AUC draws its sampled negatives per block of a worker's users (distrec/eval/ranking.py):
    # other workers, other blocks, other negatives. It is not a function of the model alone.
    return {k: v for k, v in metrics.items() if k.startswith("val_") and k != "val_auc"}


def _assert_same_state(got: dict, want: dict, *, convert: dict | None = None) -> None:
    """Bit for bit; ``convert``: key → the expected value where it is converted, not copied."""
    convert = convert or {}
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], convert.get(key, want[key]), rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")


def _assert_same_metrics(got: dict, want: dict) -> None:
    got, want = _comparable(got), _comparable(want)
    assert sorted(got) == sorted(want)
    assert all(abs(got[k] - want[k]) <= METRIC_TOL for k in want), {
        k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > METRIC_TOL
    }


def _trained(state: dict) -> None:
    """The restored state is a trained one: some optimizer state is not zero (unless SGD)."""
    moments = [v for k, v in state.items() if k.startswith(("fused/", "dense/")) and v.is_floating_point()]
    assert any(bool(v.abs().sum() > 0) for v in moments), sorted(state)


# -- every model with tables: 2 → 1, 1 → 2, 2 → 3 ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_restores_on_another_number_of_workers(dataset, tmp_path, name):
    """2 workers train epoch 1; 1 worker restores it and trains epoch 2; then 3 workers restore
    epoch 1 (saved by 2) and 2 workers restore epoch 2 (saved by 1)."""
    model, types = MODELS[name]
    cfg = _config(dataset, str(tmp_path / "out"), model, types=types)
    root = str(tmp_path / "ckpt")
    by2, by1 = f"{root}/checkpoint_00001", f"{root}/checkpoint_00002"
    trained, ref2 = _run(2, (_train, cfg, root), (_restore, cfg, by2))
    on1, resumed, ref1 = _run(
        1,
        (_restore, cfg, by2),
        (_train, _config(dataset, str(tmp_path / "out"), model, types=types, epochs=2), root),
        (_restore, cfg, by1),
    )
    (on3,) = _run(3, (_restore, cfg, by2))
    (on2,) = _run(2, (_restore, cfg, by1))

    # restored on the workers that saved it: the model of the epoch they reported
    for ref, report, world in ((ref2, trained["reports"][0], 2), (ref1, resumed["reports"][0], 1)):
        assert ref["progress"]["world"] == world
        for key, value in _comparable(ref["val"]).items():
            assert value == pytest.approx(report[key], rel=1e-9, abs=1e-12), key
    _trained(ref2["state"])
    assert "resumed from epoch 1 (saved by 2 workers, now 1: tables resharded)" in resumed["console"]
    assert [r["epoch"] for r in resumed["reports"]] == [2]
    # restored on others: the same state, bit for bit, and the same validation metrics
    for got, want in ((on1, ref2), (on3, ref2), (on2, ref1)):
        _assert_same_state(got["state"], want["state"])
        _assert_same_metrics(got["val"], want["val"])
    if name == "mf":
        assert {ref2["kinds"]["user_bias"], on1["kinds"]["user_bias"], on3["kinds"]["user_bias"]} == {"data_parallel"}


# -- a forced layout change, with each optimizer --------------------------------------------------
WIDE = {"name": "mf", "dim": 256, "init_std": 0.1}  # 256 columns: TorchRec splits column-wise in 128s (MIN_CW_DIM)
TABLES = ("user", "item")


def _rowwise_key(table: str) -> str:
    return f"fused/sparse.embedding_bags.{table}.weight/{table}.momentum1"


@pytest.mark.slow
@pytest.mark.parametrize("sparse", ["rowwise_adagrad", "adagrad", "sgd"])
def test_a_forced_layout_change_restores_tables_and_optimizer_state(dataset, tmp_path, sparse):
    """Table-wise on 2 workers → column-wise on 3 (one more epoch there) → table-wise on 1."""
    table_wise = _config(dataset, str(tmp_path / "out"), WIDE, types=dict.fromkeys(TABLES, "table_wise"), sparse=sparse)
    column_wise = _config(
        dataset, str(tmp_path / "out"), WIDE, types=dict.fromkeys(TABLES, "column_wise"), sparse=sparse, epochs=2
    )
    root = str(tmp_path / "ckpt")
    _, tw2 = _run(2, (_train, table_wise, root), (_restore, table_wise, f"{root}/checkpoint_00001"))
    cw3, resumed, cw3_after = _run(
        3,
        (_restore, column_wise, f"{root}/checkpoint_00001"),
        (_train, column_wise, root),
        (_restore, column_wise, f"{root}/checkpoint_00002"),
    )
    (tw1,) = _run(1, (_restore, table_wise, f"{root}/checkpoint_00002"))
    assert {tw2["kinds"][t] for t in TABLES} == {"table_wise"} and {cw3["kinds"][t] for t in TABLES} == {"column_wise"}

    # table-wise → column-wise: the weights and element-wise states as they were; each column
    # shard's row-wise accumulator is the whole row's (how it spread over the columns is unknown)
    split = {}
    if sparse == "rowwise_adagrad":
        split = {_rowwise_key(t): tw2["state"][_rowwise_key(t)].repeat(2) for t in TABLES}
        assert all(cw3["state"][k].shape == v.shape for k, v in split.items())  # two column shards, two accumulators a row
    _assert_same_state(cw3["state"], tw2["state"], convert=split)
    _assert_same_metrics(cw3["val"], tw2["val"])

    # it trains on: the message, the world in progress.json
    assert "resumed from epoch 1 (saved by 2 workers, now 3: tables resharded)" in resumed["console"]
    assert [r["epoch"] for r in resumed["reports"]] == [2]
    with open(f"{root}/checkpoint_00002/{PROGRESS}") as f:
        assert json.load(f)["world"] == 3

    # column-wise → table-wise: the accumulators merge into their column-weighted mean (exact)
    merged = {}
    if sparse == "rowwise_adagrad":
        for t in TABLES:
            halves = cw3_after["state"][_rowwise_key(t)].double().reshape(2, -1)
            merged[_rowwise_key(t)] = ((128 * halves[0] + 128 * halves[1]) / 256).float()
    _assert_same_state(tw1["state"], cw3_after["state"], convert=merged)
    _assert_same_metrics(tw1["val"], cw3_after["val"])
    if sparse != "sgd":
        _trained(tw1["state"])


def _one_step_momenta(data: str, out: str) -> dict[str, np.ndarray]:
    """The row-wise accumulators of the user table after one identical step, table-wise and
    column-wise (on one worker: the same rows, the same gradients)."""
    from distrec.models.spec import ModelContext
    from distrec.train.batches import rating_batches
    from distrec.train.config import OptimConfig, ShardingConfig

    ds = InteractionDataset(data)
    batch = next(rating_batches(ds.read(split=None, parts=["train"]), batch_size=512, steps=1, rng=None))
    momenta = {}
    for kind in ("table_wise", "column_wise"):
        cfg = _config(data, out, WIDE)
        model = build_model(
            cfg.model, ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5), torch.device("meta")
        )
        optim, sharding = OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.1), ShardingConfig(types={"user": kind})
        dmp, _ = shard_model(model, optim=optim, sharding=sharding, device=torch.device("cpu"), seed=0)
        dmp(dmp.module.features(batch.user, batch.item), batch.rating, batch.weight).backward()
        value = dmp.fused_optimizer.state_dict()["state"]["sparse.embedding_bags.user.weight"]["user.momentum1"]
        momenta[kind] = _full(value, tuple(value.size()), value.dtype).numpy()
    return momenta


def test_merged_rowwise_accumulators_are_what_the_merged_kernel_accumulates(dataset, tmp_path):
    """The premise of the column-wise → table-wise conversion: after the same step, the
    table-wise accumulator of a row is the column-weighted mean of its column shards'."""
    momenta = {k: torch.from_numpy(v) for k, v in run_ranks(_one_step_momenta, 1, dataset, str(tmp_path / "out"))[0].items()}
    halves = momenta["column_wise"].double().reshape(2, -1)
    assert bool(momenta["table_wise"].abs().sum() > 0)
    assert not torch.equal(halves[0], halves[1])  # the two column shards did accumulate differently
    # float32 sums over 256 columns or 2 × 128: 1.4e-7 apart at most (seed 0); the halves differ by 25 %
    torch.testing.assert_close(momenta["table_wise"].double(), (halves[0] + halves[1]) / 2, rtol=1e-5, atol=0)


# -- a table moving between data-parallel and sharded --------------------------------------------
@pytest.mark.slow
def test_a_table_moving_in_and_out_of_data_parallel_keeps_its_weights(dataset, tmp_path):
    """Data-parallel on 2 workers → table-wise on 1 (one more epoch there) → data-parallel on 1.
    The table's weights move and everything else is as saved, except the moved table's
    optimizer state, which restarts: the dense optimizer updates data-parallel tables, the
    fused one sharded tables."""
    mf = MODELS["mf"][0]
    dp = _config(dataset, str(tmp_path / "out"), mf, types={"user": "data_parallel"})
    tw = _config(dataset, str(tmp_path / "out"), mf, types={"user": "table_wise"}, epochs=2)
    root = str(tmp_path / "ckpt")
    _, saved = _run(2, (_train, dp, root), (_restore, dp, f"{root}/checkpoint_00001"))
    sharded, _, sharded_after, back = _run(
        1,
        (_restore, tw, f"{root}/checkpoint_00001"),
        (_train, tw, root),
        (_restore, tw, f"{root}/checkpoint_00002"),
        (_restore, dp, f"{root}/checkpoint_00002"),
    )
    assert saved["kinds"]["user"] == back["kinds"]["user"] == "data_parallel" and sharded["kinds"]["user"] == "table_wise"
    fused = _rowwise_key("user")
    dense = {k for k in saved["state"] if k.startswith("dense/sparse.embedding_bags.user.weight/")}
    assert dense  # the dense optimizer did hold the data-parallel table's state

    # data-parallel → table-wise: the fused accumulator starts at zero, the rest as saved
    assert torch.equal(sharded["state"][fused], torch.zeros_like(sharded["state"][fused]))
    _assert_same_state(
        {k: v for k, v in sharded["state"].items() if k != fused}, {k: v for k, v in saved["state"].items() if k not in dense}
    )
    _assert_same_metrics(sharded["val"], saved["val"])

    # table-wise → data-parallel: no dense optimizer state for the table yet, the rest as saved
    assert not any(k in back["state"] for k in dense)
    _assert_same_state(back["state"], {k: v for k, v in sharded_after["state"].items() if k != fused})
    _assert_same_metrics(back["val"], sharded_after["val"])


def test_resume_message_names_the_world_sizes():
    assert resume_message("ckpt", {"epoch": 3, "world": 2}, 2) == "resumed from ckpt after epoch 3"
    assert resume_message("ckpt", {"epoch": 3}, 2) == "resumed from ckpt after epoch 3"  # saved before the world was recorded
    assert (
        resume_message("ckpt", {"epoch": 3, "world": 2}, 1)
        == "resumed from epoch 3 (saved by 2 workers, now 1: tables resharded)"
    )
    assert (
        resume_message("ckpt", {"epoch": 1, "world": 1}, 2) == "resumed from epoch 1 (saved by 1 worker, now 2: tables resharded)"
    )
