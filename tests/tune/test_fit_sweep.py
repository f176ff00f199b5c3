"""A sweep of a closed form (jobs/fit.py): one λ per trial, each solved in its trial's process."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distrec.config import load_config
from distrec.fit.config import FitConfig
from distrec.tune.config import SweepConfig
from distrec.tune.run import sweep
from tests.helpers import tiny_synthetic

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_ease_lambda_sweep(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(ROOT)
    data = str(tmp_path / "data")
    tiny_synthetic(data, users=200, items=120, ratings=6_000, split="user-ratio:0.8/0.1/0.1")
    path = tmp_path / "sweep.yaml"
    path.write_text(
        f"base: configs/ease/ml-1m.yaml\njob: fit\noverrides: [data.path={data}, data.split=null]\n"
        "search:\n  model.lambdas: {grid: [[1], [30], [100000]]}\n"
        "metric: val_hr@100\nalso_report: [test_ndcg@10]\nmode: max\nnum_samples: 1\nscheduler: {name: fifo}\n"
        f"output_dir: {tmp_path / 'sweep'}\n"
    )
    summary = sweep(load_config(SweepConfig, path))
    rows = pq.read_table(tmp_path / "sweep" / "results.parquet").to_pylist()
    assert sorted(r["param.model.lambdas"][0] for r in rows) == [1, 30, 100000]
    assert all(r["status"] == "completed" and 0 < r["test_ndcg@10"] <= 1 for r in rows)
    assert "test_ndcg@10" in (tmp_path / "sweep" / "leaderboard.md").read_text()
    assert summary["best"] == max(r["best_val_hr@100"] for r in rows)
    best = load_config(FitConfig, tmp_path / "sweep" / "best_config.yaml")
    assert best.model.lambdas == summary["best_params"]["model.lambdas"]
