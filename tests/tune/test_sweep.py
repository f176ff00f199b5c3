"""A real sweep through jobs/tune.py: ASHA stops bad trials, the driver is killed mid-sweep and
``--resume`` finishes it without re-running finished trials, and the outputs are usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pyarrow.parquet as pq
import pytest

from distrec.config import load_config
from distrec.train.config import TrainConfig
from tests.helpers import tiny_synthetic, training_seed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LEARNING_RATES = [0.05, 0.002, 0.0005]  # the first is good, the others clearly worse


def _tune(*args: str, ray_env: dict[str, str], **popen) -> subprocess.Popen:
    # TUNE_GLOBAL_CHECKPOINT_S=1: Tune saves its experiment state every second, so the kill
    # below lands after the finished trial is on record (Tune's own default is adaptive).
    # ray_env: the driver runs on the session's Ray (a killed driver's trials end with it, as
    # they would with an embedded Ray), not on an embedded one of its own.
    env = {
        **os.environ,
        **ray_env,
        "PYTHONPATH": str(ROOT),
        "DISTREC_QUIET": "1",
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
    }  # this checkout, not the installed one
    return subprocess.Popen([sys.executable, "jobs/tune.py", *args, "--quiet"], cwd=ROOT, env=env, **popen)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"jobs/tune.py exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.5)


def test_asha_sweep_killed_then_resumed(tmp_path, session_ray_env):
    data = str(tmp_path / "data")
    tiny_synthetic(data, ratings=6_000)
    out = tmp_path / "sweep"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "base: configs/mf/demo.yaml\n"
        f"overrides: [data.path={data}, ray.num_workers=1, train.epochs=3, train.early_stopping_metric=null, "
        f"train.seed={training_seed()}]\n"
        f"search:\n  optim.sparse_lr: {{grid: {LEARNING_RATES}}}\n"
        "metric: val_rmse\nmode: min\nnum_samples: 1\nmax_concurrent_trials: 1\n"
        "scheduler: {name: asha, grace_period: 1, reduction_factor: 2}\n"
        f"output_dir: {out}\n"
    )

    driver = _tune("--config", str(sweep), ray_env=session_ray_env, start_new_session=True)
    trials = out / "trials"
    # one trial at a time: a second trial's folder means the first one finished
    _wait_for(lambda: trials.exists() and len(list(trials.iterdir())) >= 2, driver)
    time.sleep(3)  # > TUNE_GLOBAL_CHECKPOINT_S
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = [t for t in trials.iterdir() if (t / "metrics.json").exists()]
    assert finished, "no trial had finished when the driver was killed"
    stamps = {t.name: (t / "metrics.json").stat().st_mtime_ns for t in finished}

    resumed = _tune("--resume", str(out), ray_env=session_ray_env, stdout=subprocess.PIPE, text=True)
    stdout, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stdout[-3000:]

    # finished trials were not run again
    assert {name: (trials / name / "metrics.json").stat().st_mtime_ns for name in stamps} == stamps
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == len(LEARNING_RATES) and all(r["status"] != "error" for r in rows)
    assert any(r["status"] == "stopped early" and r["epochs"] < 3 for r in rows), rows
    assert rows[0]["param.optim.sparse_lr"] == LEARNING_RATES[0]
    assert rows[0]["best_val_rmse"] == min(r["best_val_rmse"] for r in rows)
    assert "| 1 |" in (out / "leaderboard.md").read_text()
    for png in ("metric_per_epoch.png", "metric_vs_optim.sparse_lr.png"):
        assert matplotlib.image.imread(out / png).shape[0] > 100
    assert "metric_per_epoch.png" in (out / "report.html").read_text()

    # best_config.yaml is a train config as is: it loads and validates as one
    best = load_config(TrainConfig, out / "best_config.yaml")
    assert best.optim.sparse_lr == LEARNING_RATES[0] and best.train.epochs == 3
