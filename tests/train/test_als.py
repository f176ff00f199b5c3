"""The ALS loop on real gloo ranks (and, marked slow, through Ray Train with a killed worker):
1 and 2 workers give the same factors with either exchange; explicit and implicit sweeps match
a dense numpy ALS from the same start; exact sweeps never raise the objective; the exported
tables reproduce the run's test metric; a run resumes where its checkpoint left it."""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np
import pytest
import torch

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.eval.factors import exported_scorer
from distrec.eval.holdout import Holdout
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.runtime.session import LocalSession
from distrec.storage.embeddings import read_embeddings
from distrec.train.als_worker import initial_factors, train_als_worker
from distrec.train.config import TrainConfig
from tests.faults import registered_checkpoints, wait_for
from tests.helpers import run_ranks, tiny_synthetic

SWEEPS = 4
VARIANTS = {
    "explicit": {"dim": 6, "l2": 0.05},  # ALS-WR with biases, Cholesky; a small table: all-gather
    "explicit_a2a": {"dim": 6, "l2": 0.05, "exchange": "all_to_all"},
    "implicit_cg": {"objective": "implicit", "dim": 6, "l2": 0.5, "alpha": 5.0, "exchange": "all_to_all"},
    "implicit_cholesky": {"objective": "implicit", "solver": "cholesky", "dim": 6, "l2": 0.5, "alpha": 5.0, "reg_exponent": 0.5},
    "bayesian": {"bayesian": True, "burn_in": 1, "dim": 4, "exchange": "all_to_all"},
    # nearly unregularised: validation RMSE turns up after a sweep or two and the best sweep is restored
    "explicit_early_stop": {"dim": 6, "l2": 0.001},
}
EARLY_STOP = {"early_stopping_metric": "val_rmse", "patience": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=300, items=200, ratings=20_000)
    return out


def _config(data: str, out: str, name: str, epochs: int = SWEEPS) -> TrainConfig:
    model = {"name": "als", **VARIANTS[name]}
    train = {"epochs": epochs, **(EARLY_STOP if name == "explicit_early_stop" else {})}
    return from_dict(TrainConfig, {"data": {"path": data}, "model": model, "train": train, "output_dir": out})


def _run(data: str, root: str, name: str, epochs: int = SWEEPS, ckpt: str | None = None) -> dict:
    session = LocalSession(ckpt or f"{root}/{name}/ckpt")
    metrics = train_als_worker(_config(data, f"{root}/{name}", name, epochs), session)
    return {**metrics, "reported": [r["epoch"] for r in session.reports]}


def _all(data: str, root: str) -> dict:
    """On every rank: each variant for SWEEPS sweeps; with 2 workers also a Bayesian and an
    implicit run stopped after 2 sweeps and resumed to SWEEPS; with 1 worker, a resume of the
    2-worker checkpoint."""
    out = {name: _run(data, root, name) for name in VARIANTS}
    if torch.distributed.get_world_size() == 2:
        for name in ("bayesian", "implicit_cg"):
            _run(data, f"{root}/resumed", name, epochs=2)
            out[f"{name}_resumed"] = _run(data, f"{root}/resumed", name)
    else:
        try:
            _run(data, root, "explicit", ckpt=f"{root}/../two/explicit/ckpt")
        except DataError as e:
            out["refused"] = str(e)
    return out


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory) -> dict[int, tuple[dict, str]]:
    base = tmp_path_factory.mktemp("runs")
    two = run_ranks(_all, 2, dataset, str(base / "two"))[0]
    one = run_ranks(_all, 1, dataset, str(base / "one"))[0]
    return {1: (one, str(base / "one")), 2: (two, str(base / "two"))}


def _tables(root: str, name: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    out = {}
    for side in ("user", "item"):
        t = read_embeddings(f"{root}/{name}/embeddings/{side}")
        out[side] = (t.vector, t.columns.get("bias"))
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_one_and_two_workers_give_the_same_factors(runs, name):
    (one, root1), (two, root2) = runs[1], runs[2]
    assert two[name]["num_workers"] == 2 and one[name]["num_workers"] == 1
    a, b = _tables(root1, name), _tables(root2, name)
    for side in ("user", "item"):
        torch.testing.assert_close(torch.from_numpy(b[side][0]), torch.from_numpy(a[side][0]), rtol=1e-4, atol=1e-5)
        if a[side][1] is not None:
            torch.testing.assert_close(torch.from_numpy(b[side][1]), torch.from_numpy(a[side][1]), rtol=1e-4, atol=1e-5)
    assert two[name]["reported"] == one[name]["reported"]


def _numpy_sweeps(cfg: TrainConfig, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense float64 ALS from the loop's starting rows: each row's normal equations solved with
    numpy, implicit ones summed over every item (no Gramian trick)."""
    ds = InteractionDataset(cfg.data.path)
    train = ds.read(split=None, parts=["train"])
    m = cfg.model
    ratings = np.zeros((ds.num_users, ds.num_items))
    ratings[train.user, train.item] = train.rating
    observed = ratings > 0
    mean = float(train.rating.astype(np.float64).mean()) if m.objective == "explicit" else 0.0
    lam = m.reg_vector().double().numpy()

    def half(r: np.ndarray, seen: np.ndarray, table: np.ndarray) -> np.ndarray:
        rows = []
        for u in range(len(r)):
            if m.objective == "explicit":
                feats, target = table[seen[u]].copy(), r[u, seen[u]] - mean
                if m.with_biases:
                    target, feats[:, m.dim] = target - feats[:, m.dim], 1.0
                a = feats.T @ feats + max(seen[u].sum(), 1) ** m.exponent * np.diag(lam)
                rows.append(np.linalg.solve(a, feats.T @ target))
            else:
                c = 1.0 + m.alpha * seen[u]
                a = table.T @ (c[:, None] * table) + c.sum() ** m.exponent * np.diag(lam)
                rows.append(np.linalg.solve(a, table.T @ (c * seen[u])))
        return np.array(rows)

    x = initial_factors(cfg, "user", np.arange(ds.num_users)).double().numpy()
    y = initial_factors(cfg, "item", np.arange(ds.num_items)).double().numpy()
    for _ in range(sweeps):
        x = half(ratings, observed, y)
        y = half(ratings.T, observed.T, x)
    return x, y


@pytest.mark.parametrize("name", ["explicit", "implicit_cholesky"])
def test_sweeps_match_a_dense_numpy_als(runs, dataset, name):
    two, root = runs[2]
    x, y = _numpy_sweeps(_config(dataset, "unused", name), SWEEPS)
    tables = _tables(root, name)
    for side, ref in (("user", x), ("item", y)):
        vector, bias = tables[side]
        got = vector if bias is None else np.concatenate([vector, bias[:, None]], 1)
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-4, err_msg=side)


@pytest.mark.parametrize("name", ["explicit", "implicit_cholesky"])
def test_exact_sweeps_never_raise_the_objective(runs, name):
    history = json.load(open(os.path.join(runs[2][1], name, "history.json")))
    losses = [h["train_loss"] for h in history]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses


def _rating_rmse(root: str, name: str, dataset: str) -> float:
    users, items = read_embeddings(f"{root}/{name}/embeddings/user"), read_embeddings(f"{root}/{name}/embeddings/item")
    ds = InteractionDataset(dataset)
    test = ds.read(split=None, parts=["test"])
    pred = users.meta["global_mean"] + users.columns["bias"][test.user] + items.columns["bias"][test.item]
    pred = pred + (users.vector[test.user] * items.vector[test.item]).sum(1)
    lo, hi = ds.meta["rating"]["min"], ds.meta["rating"]["max"]
    return float(np.sqrt(np.mean((np.clip(pred, lo, hi) - test.rating) ** 2)))


@pytest.mark.parametrize("name", ["explicit", "bayesian", "explicit_early_stop"])
def test_exported_rating_tables_reproduce_the_test_rmse(runs, dataset, name):
    two, root = runs[2]
    assert _rating_rmse(root, name, dataset) == pytest.approx(two[name]["test_rmse"], abs=1e-5)


def test_bayesian_tables_hold_every_kept_sample(runs):
    two, root = runs[2]
    assert two["bayesian"]["samples"] == SWEEPS - 1
    assert _tables(root, "bayesian")["user"][0].shape[1] == 4 * (SWEEPS - 1)


def test_exported_implicit_tables_reproduce_the_test_ranking(runs, dataset):
    two, root = runs[2]
    holdout = Holdout.read(InteractionDataset(dataset))
    again = evaluate_ranking(exported_scorer(f"{root}/implicit_cg"), target=holdout.test, seen=holdout.seen("test"),
                             cfg=RankingConfig(block_users=1024), prefix="test", propensity=holdout.propensity())  # fmt: skip
    for key in ("test_ndcg@10", "test_hr@100", "test_psp@10"):
        assert again[key] == pytest.approx(two["implicit_cg"][key], abs=1e-6), key


def test_early_stopping_restores_the_best_sweep(runs):
    two, root = runs[2]
    result = two["explicit_early_stop"]
    history = json.load(open(os.path.join(root, "explicit_early_stop", "history.json")))
    best = min(range(len(history)), key=lambda k: history[k]["val_rmse"]) + 1
    assert result["best_epoch"] == best and result["epochs"] == best + 1 < SWEEPS and result["restored_best"]


@pytest.mark.parametrize("name", ["bayesian", "implicit_cg"])
def test_a_resumed_run_continues_the_sweep_count_and_matches(runs, name):
    two, _ = runs[2]
    resumed, straight = two[f"{name}_resumed"], two[name]
    assert resumed["resumes"] == 1 and resumed["reported"] == [3, 4] and resumed["epochs"] == SWEEPS
    for key in ("test_rmse", "test_ndcg@10"):
        if key in straight:
            assert resumed[key] == pytest.approx(straight[key], abs=1e-6)


def test_a_checkpoint_of_another_world_size_is_refused(runs):
    one, _ = runs[1]
    assert "written by 2 worker(s); resume it with ray.num_workers=2" in one["refused"]


# -- through Ray Train ----------------------------------------------------------------------------
def _ray_config(data: str, tmp_path, epochs: int) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {"name": "als", "dim": 8, "l2": 0.05, "exchange": "all_to_all"},
            "train": {"epochs": epochs},
            "ray": {"num_workers": 2, "storage_path": str(tmp_path / "ray"), "max_failures": 1},
            "output_dir": str(tmp_path / "out"),
        },
    )


def _reference(cfg: TrainConfig) -> dict:
    return train_als_worker(cfg, LocalSession(f"{cfg.output_dir}/ckpt"))


@pytest.mark.slow
def test_killed_ray_worker_resumes_the_sweep_count(local_ray, dataset, tmp_path):
    """worker.py picks the ALS loop; a SIGKILLed worker restarts the run from the last sweep's
    checkpoint, which continues the count to the end and reproduces an uninterrupted run."""
    from distrec.runtime.config import run_name
    from distrec.train.run import train as fit
    from tests.train.test_ray import _train_worker_pids

    epochs = 12  # the kill lands after the first checkpoint, with sweeps left to redo
    reference = run_ranks(_reference, 2, _ray_config(dataset, tmp_path / "reference", epochs))[0]
    cfg = _ray_config(dataset, tmp_path / "killed", epochs)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(fit(cfg)))
    thread.start()
    wait_for(
        lambda: registered_checkpoints(tmp_path / "killed" / "ray" / run_name(cfg)), timeout=300, what="the first checkpoint"
    )
    victims = _train_worker_pids()
    assert victims, "no training worker found"
    os.kill(victims[-1], signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert result["resumes"] >= 1 and result["epochs"] == epochs
    history = json.load(open(tmp_path / "killed" / "out" / "history.json"))
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert result["test_rmse"] == pytest.approx(reference["test_rmse"], abs=1e-5)
    assert "all-to-all" in (tmp_path / "killed" / "out" / "plan.txt").read_text()
    assert (tmp_path / "killed" / "out" / "report.html").exists()
