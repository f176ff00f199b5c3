"""A sweep of the compressor job (it reports its metrics once, after evaluation): every trial
runs to the end and the best config is a compressor config as is."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distrec.compress.config import CompressConfig
from distrec.config import ConfigError, load_config
from distrec.tune.config import SweepConfig
from distrec.tune.run import base_config, sweep
from tests.compress.conftest import write_run
from tests.helpers import tiny_synthetic, training_seed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _sweep(tmp_path, scheduler: str) -> SweepConfig:
    path = tmp_path / f"sweep-{scheduler}.yaml"
    path.write_text(
        f"base: configs/compress/ml-100k.yaml\njob: compress\n"
        f"overrides: [source.run={tmp_path / 'run'}, ray.num_workers=1, 'ratios=[4]', 'model.hidden=[16]',"
        f" model.token_dim=8, fit.epochs=2, fit.batch_size=32, fit.checkpoint_every=1, fit.seed={training_seed()}]\n"
        "search:\n  model.keep_fraction: {grid: [0.5, 1.0]}\n"
        f"metric: dds@4x_rmse_delta_both\nmode: min\nnum_samples: 1\nscheduler: {{name: {scheduler}}}\n"
        f"output_dir: {tmp_path / 'sweep'}\n"
    )
    return load_config(SweepConfig, path)


def test_asha_is_refused_for_a_job_that_reports_once(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="scheduler.name=fifo"):
        base_config(_sweep(tmp_path, "asha"))


def test_compressor_sweep(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(ROOT)
    data = str(tmp_path / "data")
    tiny_synthetic(data, users=300, items=200, ratings=12_000)
    write_run(str(tmp_path / "run"), data)
    summary = sweep(_sweep(tmp_path, "fifo"))
    rows = pq.read_table(tmp_path / "sweep" / "results.parquet").to_pylist()
    assert sorted(r["param.model.keep_fraction"] for r in rows) == [0.5, 1.0]
    assert all(r["status"] == "completed" for r in rows)
    assert summary["best"] == min(r["best_dds@4x_rmse_delta_both"] for r in rows)
    best = load_config(CompressConfig, tmp_path / "sweep" / "best_config.yaml")
    assert best.model.keep_fraction == summary["best_params"]["model.keep_fraction"]
    assert (tmp_path / "sweep" / "trials" / summary["best_trial"] / "metrics.json").exists()
