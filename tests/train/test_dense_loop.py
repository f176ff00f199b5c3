"""The dense loop (GLocal-K) on real gloo ranks: item rows split over 2 workers give 1 worker's
objective and gradients; under 2 workers the loss falls, the local kernel sparsifies, and a run
resumes from its checkpoint."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch.distributed as dist

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.models.glocal_k import GLocalK, GLocalKConfig
from distrec.runtime.session import LocalSession
from distrec.train.config import TrainConfig
from distrec.train.dense_worker import item_rows, objective, train_dense_worker, wrap
from tests.helpers import job_on_ranks, run_ranks, tiny_synthetic, training_seed


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=80, items=61, ratings=2000)  # 61 items: the workers' blocks differ in size
    return out


def _train(data: str, out: str, ckpt: str, epochs: int, lambda_s: float = 0.006) -> dict:
    cfg = from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {
                "name": "glocal_k",
                "hidden": 16,
                "lambda_s": lambda_s,
                "pretrain_epochs": 2,
                "pretrain_iters": 4,
                "finetune_iters": 4,
            },
            "train": {"epochs": epochs, "seed": training_seed()},
            "output_dir": out,
        },
    )
    session = LocalSession(ckpt)
    result = train_dense_worker(cfg, session)
    result["reports"] = session.reports
    return result


def _runs(data: str, tmp: str) -> dict:
    """On every rank: a run of 3 epochs; a second of 2 epochs resumed to 3; a strongly sparsified one."""
    out = {"straight": _train(data, f"{tmp}/a", f"{tmp}/ckpt_a", 3)}
    _train(data, f"{tmp}/b", f"{tmp}/ckpt_b", 2)
    out["resumed"] = _train(data, f"{tmp}/b", f"{tmp}/ckpt_b", 3)
    out["sparse"] = _train(data, f"{tmp}/c", f"{tmp}/ckpt_c", 4, lambda_s=1.0)
    return out


def _losses(result: dict) -> list[float]:
    return [r["train_loss"] for r in result["reports"]]


def _objective_and_gradients(data: str) -> dict:
    """Both stages' objective and gradient at the same parameters, on this rank (numpy: a tensor
    sent back to the parent is shared memory that must outlive this process)."""
    ds = InteractionDataset(data)
    rows = item_rows(ds, None, rank=dist.get_rank(), world=dist.get_world_size(), halo=1)
    model = GLocalK(GLocalKConfig(hidden=16), num_users=ds.num_users, num_items=ds.num_items, seed=3)
    nets, group = wrap(model)
    out = {}
    for stage in ("pretrain", "finetune"):
        model.zero_grad(set_to_none=True)
        out[stage] = float(objective(nets[stage], model, rows, stage=stage, group=group))
        out.update({f"{stage}/{n}": p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None})
    return out


def test_two_workers_compute_the_objective_and_gradient_of_one(dataset):
    one = run_ranks(_objective_and_gradients, 1, dataset)[0]
    two = run_ranks(_objective_and_gradients, 2, dataset)
    assert "finetune/conv_kernel" in one and "pretrain/conv_kernel" not in one
    for rank in two:  # halo rows, the all-reduced pooling and DDP: the same numbers on every worker
        assert set(rank) == set(one)
        for key, value in one.items():
            np.testing.assert_allclose(rank[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_two_workers_lose_loss_sparsify_and_resume(dataset, tmp_path):
    two = run_ranks(_runs, 2, dataset, str(tmp_path))[0]
    straight = two["straight"]
    assert [r["stage"] for r in straight["reports"]] == ["pretrain", "pretrain", "finetune"]
    assert straight["test_count"] > 0 and straight["num_workers"] == 2

    # the objective falls in both stages
    for result in (straight, two["sparse"]):
        losses = _losses(result)
        assert losses[1] < losses[0] and losses[-1] < losses[1], losses

    # λ_s pushes kernel vectors apart until whole weights count exactly zero
    sparse = two["sparse"]
    assert max(v for k, v in sparse.items() if k.startswith("kernel_zero_frac_")) > 0.1, sparse

    # the resumed run ran only the missing epoch and reproduces the straight one
    resumed = two["resumed"]
    assert resumed["resumes"] == 1 and [r["epoch"] for r in resumed["reports"]] == [3]
    assert resumed["test_rmse"] == pytest.approx(straight["test_rmse"], rel=1e-6)

    metrics = json.load(open(os.path.join(tmp_path, "a", "metrics.json")))
    assert metrics["test_rmse"] == pytest.approx(straight["test_rmse"])


def test_the_job_s_worker_picks_the_dense_loop_and_splits_the_items(dataset, tmp_path):
    """Through the training job's worker function (what Ray Train runs): worker.py hands GLocal-K
    to the dense loop, the plan gives each of the 2 workers its block of items, the loss falls."""
    cfg = from_dict(
        TrainConfig,
        {
            "data": {"path": dataset},
            "model": {"name": "glocal_k", "hidden": 16, "pretrain_epochs": 2, "pretrain_iters": 3, "finetune_iters": 3},
            "train": {"epochs": 3, "seed": training_seed()},
            "output_dir": str(tmp_path / "out"),
        },
    )
    metrics = job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    history = json.load(open(tmp_path / "out" / "history.json"))
    assert [h["stage"] for h in history] == ["pretrain", "pretrain", "finetune"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["num_workers"] == 2 and metrics["test_count"] > 0
    assert "rank 1: items" in (tmp_path / "out" / "plan.txt").read_text()
