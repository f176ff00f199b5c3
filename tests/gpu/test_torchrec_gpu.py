"""TorchRec on GPUs, on real NCCL ranks (one GPU each, ``cpu:gloo,cuda:nccl`` as Ray Train uses
with ``ray.use_gpu``): a sharded MF step against the unsharded CPU reference (one GPU, and row-wise
over two), a fused-Adam step against ``torch.optim.Adam``, and a checkpoint saved on a GPU restored
on the CPU and back. Every test is marked ``gpu``: where torch sees no GPU it is collected and
skipped with the reason (tests/conftest.py), so this module imports nothing that needs CUDA.
``make gpu-check`` runs them on a machine with NVIDIA GPUs.

The reference is the same ``BiasedMF`` built on the CPU with plain (unsharded) embedding bags,
the same initial rows (``init_rows`` depends only on seed, table and row) and the same global
batch, stepped by the torch optimizer the fused one implements. Adam's first step from zero
moments moves a row by lr·g/(|g| + eps) and leaves untouched rows alone, as the fused one does.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.models.tables import init_rows
from distrec.runtime.checkpoint import load_checkpoint, save_checkpoint
from distrec.train.batches import Batch, rating_batches
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.sharding import local_table_pieces, shard_model
from tests.helpers import run_ranks, tiny_synthetic

pytestmark = pytest.mark.gpu

BACKEND = "cpu:gloo,cuda:nccl"
TABLES = ("user", "item", "user_bias", "item_bias")
SEED, GLOBAL_BATCH = 7, 1024


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out)
    return out


def _model(data: str, device: torch.device):
    ds = InteractionDataset(data)
    cfg = from_dict(
        TrainConfig, {"data": {"path": data}, "model": {"name": "mf", "dim": 8, "init_std": 0.1}, "output_dir": "unused"}
    )
    ctx = ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5)
    return build_model(cfg.model, ctx, device), ds


def _global_batch(ds: InteractionDataset) -> Batch:
    return next(rating_batches(ds.read(split=None, parts=["train"]), batch_size=GLOBAL_BATCH, steps=1, rng=None))


def _reference(data: str, optimizer: str, lr: float) -> dict[str, torch.Tensor]:
    """One step of the unsharded model on the CPU: every table after the step."""
    model, ds = _model(data, torch.device("cpu"))
    bags = model.sparse.embedding_bags
    with torch.no_grad():
        for t in model.tables:
            bags[t.name].weight.copy_(init_rows(t, SEED, 0, t.rows))
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](model.sparse.parameters(), lr=lr)
    batch = _global_batch(ds)
    model(model.features(batch.user, batch.item), batch.rating, batch.weight).backward()
    opt.step()
    return {name: bags[name].weight.detach().clone() for name in TABLES}


def _tables(dmp) -> dict[str, list[tuple[int, int, torch.Tensor]]]:
    """This rank's pieces of every table, as numpy arrays: a rank process returns them by value
    (torch tensors would travel as shared memory that is gone once the rank exits)."""
    return {name: [(r, c, v.detach().cpu().numpy().copy()) for r, c, v in local_table_pieces(dmp, name)] for name in TABLES}


def _sharded(data: str, device: torch.device, sharding: str | None, optimizer: str, lr: float):
    model, ds = _model(data, torch.device("meta"))
    types = {t: sharding for t in TABLES} if sharding else {}
    dmp, plan = shard_model(
        model,
        optim=OptimConfig(sparse=optimizer, sparse_lr=lr, dense="sgd", dense_lr=0.1),
        sharding=ShardingConfig(types=types),
        device=device,
        seed=SEED,
    )
    return dmp, plan, ds


def _step(dmp, ds: InteractionDataset, device: torch.device) -> None:
    """This rank's share of the global batch: DMP's gradient averaging makes the update that of
    the whole batch's mean."""
    rank, world = dist.get_rank(), dist.get_world_size()
    share = GLOBAL_BATCH // world
    batch = _global_batch(ds)
    sl = slice(rank * share, (rank + 1) * share)
    on = Batch(user=batch.user[sl], item=batch.item[sl], rating=batch.rating[sl], weight=batch.weight[sl]).to(device)
    dmp(dmp.module.features(on.user, on.item), on.rating, on.weight).backward()


def _gpu_step(data: str, sharding: str, optimizer: str, lr: float) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    dmp, plan, ds = _sharded(data, device, sharding, optimizer, lr)
    _step(dmp, ds, device)
    kinds = {name: p.sharding_type for name, p in plan.get_plan_for_module("sparse").items()}
    return {"tables": _tables(dmp), "kinds": kinds}


def _assemble(results: list[dict], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {name: torch.full_like(t, float("nan")) for name, t in like.items()}
    for result in results:
        for name, pieces in result["tables"].items():
            for r, c, v in pieces:
                out[name][r : r + v.shape[0], c : c + v.shape[1]] = torch.from_numpy(v)
    return out


def test_dmp_step_on_one_gpu_matches_the_unsharded_cpu_reference(dataset):
    results = run_ranks(_gpu_step, 1, dataset, "table_wise", "sgd", 0.5, backend=BACKEND)
    want = _reference(dataset, "sgd", 0.5)
    got = _assemble(results, want)
    for name in TABLES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="row-wise sharding over 2 GPUs needs 2 GPUs")
def test_row_wise_over_two_gpus_matches_the_unsharded_cpu_reference(dataset):
    results = run_ranks(_gpu_step, 2, dataset, "row_wise", "sgd", 0.5, backend=BACKEND)
    assert all(kind == "row_wise" for kind in results[0]["kinds"].values())
    assert all(results[r]["tables"]["user"] for r in (0, 1))  # each GPU holds rows of the user table
    want = _reference(dataset, "sgd", 0.5)
    got = _assemble(results, want)
    for name in TABLES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_fused_adam_step_on_gpu_matches_torch_adam(dataset):
    results = run_ranks(_gpu_step, 1, dataset, "table_wise", "adam", 0.01, backend=BACKEND)
    want = _reference(dataset, "adam", 0.01)
    got = _assemble(results, want)
    for name in TABLES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    before = {t.name: init_rows(t, SEED, 0, t.rows) for t in _model(dataset, torch.device("meta"))[0].tables}
    moved = (got["user"] - before["user"]).abs().amax(1)
    assert moved.max() == pytest.approx(0.01, rel=1e-3)  # Adam's first step: lr·sign(g) on every touched row


# -- checkpoints across devices ---------------------------------------------------------------
def _save_step_save(data: str, root: str, device_type: str, load_from: str | None) -> dict:
    """Build on this device (row-wise Adagrad, which both kernels have), optionally restore
    ``load_from``, take one step, save to ``root/<device_type>``; returns the tables before
    and after the step."""
    device = torch.device("cuda", torch.cuda.current_device()) if device_type == "cuda" else torch.device("cpu")
    dmp, _, ds = _sharded(data, device, "table_wise", "rowwise_adagrad", 0.5)
    dense = torch.optim.SGD([dmp.module.mean], lr=0.1)
    if load_from:
        load_checkpoint(load_from, dmp=dmp, dense_opt=dense)
    before = _tables(dmp)
    _step(dmp, ds, device)
    out = os.path.join(root, device_type)
    save_checkpoint(out, dmp=dmp, dense_opt=dense, progress={"epoch": 1})
    return {"before": before, "after": _tables(dmp), "path": out}


def test_checkpoint_saved_on_gpu_restores_on_cpu_and_back(dataset, tmp_path):
    """GPU: step, save A. CPU: restore A (the same tables), step, save B. GPU: restore B, step.
    The CPU's step from A equals the GPU's own next step from A: the fused row-wise Adagrad
    state came across too."""
    gpu = run_ranks(_save_step_save, 1, dataset, str(tmp_path / "a"), "cuda", None, backend=BACKEND)[0]
    cpu = run_ranks(_save_step_save, 1, dataset, str(tmp_path / "b"), "cpu", gpu["path"])[0]
    back = run_ranks(_save_step_save, 1, dataset, str(tmp_path / "c"), "cuda", cpu["path"], backend=BACKEND)[0]
    again = run_ranks(_save_step_save, 1, dataset, str(tmp_path / "d"), "cuda", gpu["path"], backend=BACKEND)[0]
    for name in TABLES:
        for (r1, c1, v1), (r2, c2, v2) in zip(gpu["after"][name], cpu["before"][name]):
            assert (r1, c1) == (r2, c2)
            torch.testing.assert_close(torch.from_numpy(v2), torch.from_numpy(v1), rtol=0, atol=0, msg=f"{name}: GPU → CPU")
        for (_, _, v1), (_, _, v2) in zip(cpu["after"][name], back["before"][name]):
            torch.testing.assert_close(torch.from_numpy(v2), torch.from_numpy(v1), rtol=0, atol=0, msg=f"{name}: CPU → GPU")
        for (_, _, v1), (_, _, v2) in zip(again["after"][name], cpu["after"][name]):
            torch.testing.assert_close(
                torch.from_numpy(v2),
                torch.from_numpy(v1),
                rtol=1e-4,
                atol=1e-5,
                msg=f"{name}: the step after a restore, GPU vs CPU",
            )
