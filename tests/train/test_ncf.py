"""NCF with attention over content profiles, trained for real on 2 gloo ranks with TorchRec
sharding: with users held out of training (cold start), and as a whole run (its report)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from distrec.config import from_dict
from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.train.config import TrainConfig
from distrec.train.report import write_train_report
from tests.helpers import check_report, job_on_ranks, training_seed

pytestmark = pytest.mark.slow

GENRES = 19  # u.item's genre flags


def _planted_ml100k(root: Path, *, users: int = 150, items: int = 80, per_user: int = 30, seed: int = 0) -> Path:
    """ML-100K-format files whose ratings follow each user's taste for genres and rating level,
    so a user's profile tells what they will think of an item they have not rated."""
    rng = np.random.default_rng(seed)
    genres = np.zeros((items, GENRES), dtype=int)
    for i in range(items):
        genres[i, 1 + rng.choice(6, size=rng.integers(1, 3), replace=False)] = 1
    taste = rng.normal(0, 1.2, (users, GENRES))
    level = rng.normal(0, 0.6, users)
    rows, test = [], []
    for u in range(users):
        for i in rng.choice(items, per_user, replace=False):
            liking = taste[u] @ genres[i] / genres[i].sum()
            rating = int(np.clip(np.rint(3.4 + level[u] + liking + rng.normal(0, 0.3)), 1, 5))
            rows.append((u + 1, i + 1, rating, 880000000 + len(rows)))
            test.append(rng.random() < 0.2)
    root.mkdir(parents=True, exist_ok=True)
    tab = lambda rs: "".join("\t".join(map(str, r)) + "\n" for r in rs)  # noqa: E731
    (root / "u.data").write_text(tab(rows))
    (root / "u1.base").write_text(tab(r for r, t in zip(rows, test) if not t))
    (root / "u1.test").write_text(tab(r for r, t in zip(rows, test) if t))
    (root / "u.item").write_text(
        "".join(
            f"{i + 1}|Movie {i + 1} ({1960 + i % 40})|01-Jan-1990||http://x|" + "|".join(map(str, genres[i])) + "\n"
            for i in range(items)
        )
    )
    (root / "u.user").write_text("".join(f"{u + 1}|30|M|writer|00000\n" for u in range(users)))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("ncf")
    out = str(base / "prepared")
    prepare_dataset(
        PrepareConfig(
            dataset="ml-100k",
            out=out,
            source=str(_planted_ml100k(base / "ml-100k")),
            splits=["u1", "u1:holdout=0.2"],
            verify_counts=False,
            seed=0,
        )
    )
    return out


def _config(data: str, tmp_path: Path, split: str, **train) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data, "split": split},
            "model": {"name": "ncf", "dim": 8, "attention_dim": 8, "hidden": [16], "max_history": 40},
            "train": {"epochs": 4, "batch_size": 256, "eval_batch_size": 512, "seed": training_seed(), **train},
            "optim": {"sparse_lr": 0.05, "dense_lr": 0.01},
            "ray": {"num_workers": 2, "storage_path": str(tmp_path / "ray")},
            "output_dir": str(tmp_path / "out"),
        },
    )


def test_held_out_users_are_scored_from_their_profiles_better_than_item_biases(dataset, tmp_path):
    cfg = _config(dataset, tmp_path, "u1_holdout")
    result = job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    losses = [r["train_loss"] for r in result["reports"]]
    assert losses[-1] < losses[0], losses
    assert result["test_cold_count"] > 50 and result["test_warm_count"] > 50
    assert result["test_cold_count"] + result["test_warm_count"] == result["test_count"]
    # users never trained on, known only by the items they rated: better than μ + b_i on their rows
    assert result["test_cold_rmse"] < result["test_cold_baseline_rmse"] - 0.05, result
    attention = json.load(open(os.path.join(cfg.output_dir, "attention.json")))
    assert attention["held_out"] and attention["history"]
    weights = [h["weight"] for h in attention["history"]]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert attention["target"]["item"] not in [h["item"] for h in attention["history"]]


def test_two_workers_with_torchrec_tables_reduce_the_loss_and_report(dataset, tmp_path):
    """The run's outputs as the job leaves them: the workers' history, plan and metrics, then the
    driver's report (distrec/train/run.py) from them."""
    cfg = _config(dataset, tmp_path, "u1", epochs=3)
    metrics = job_on_ranks("train", cfg, str(tmp_path / "ckpt"))
    write_train_report(cfg, metrics)
    history = json.load(open(tmp_path / "out" / "history.json"))
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert metrics["num_workers"] == 2 and np.isfinite(metrics["test_rmse"])
    plan = (tmp_path / "out" / "plan.txt").read_text()
    assert "item_bias" in plan and "item " in plan
    check_report(cfg.output_dir, ["history.png", "attention.png"])
