"""The training driver killed and re-launched, for real: ``jobs/train.py`` with its embedded local
Ray in its own process group. While it runs, a second launch of the same command refuses (the
output_dir lock names the holder); SIGKILLed with its whole Ray after the first checkpoint, the
same command launched again resumes from that checkpoint (Train V2 finds the run by
``RunConfig(name, storage_path)``, on whichever Ray: here the session's, which spares the test
a second embedded start) and takes over the dead driver's lock.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from distrec.storage.commit import LOCK
from tests.faults import REPO, kill_process_group, python_env, registered_checkpoints, wait_for
from tests.helpers import tiny_synthetic, training_seed

pytestmark = pytest.mark.slow

EPOCHS = 4
NAME = "killed-driver"


def _command(data: str, root) -> list[str]:
    return [
        sys.executable,
        "jobs/train.py",
        "--config",
        "configs/mf/demo.yaml",
        "--quiet",
        f"data.path={data}",
        f"output_dir={root / 'out'}",
        f"ray.storage_path={root / 'ray'}",
        f"ray.name={NAME}",
        "ray.num_workers=1",  # the driver is what this is about: a second worker adds only its start-up
        f"train.epochs={EPOCHS}",
        "train.early_stopping_metric=null",
        "train.batch_size=512",
        "model.dim=8",
        f"train.seed={training_seed()}",
    ]


def test_killed_driver_relaunched_resumes_and_a_concurrent_run_refuses(tmp_path, session_ray_env):
    data = str(tmp_path / "data")
    tiny_synthetic(data, ratings=20_000)
    command, lock, out = _command(data, tmp_path), tmp_path / "out" / LOCK, tmp_path / "out"
    # The first run's epochs take a fraction of a second; with Train's controller polling every 2 s
    # (Ray's default, which a user's environment sets over distrec's 0.1 s) each takes ~2 s, so the
    # run is still going when its first checkpoint is seen.
    slow = python_env(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="2")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=REPO, env=slow, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lock.exists, timeout=120, what="the first run's lock", process=first)
        second = subprocess.run(command, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"{lock}: another training run '{NAME}' (pid {first.pid} on " in second.stderr
        assert "is writing this directory" in second.stderr and "Traceback" not in second.stderr

        wait_for(lambda: registered_checkpoints(tmp_path / "ray" / NAME), timeout=300, what="the first checkpoint", process=first)
        kill_process_group(first)  # the driver and the embedded Ray it started: nothing is left to finish the run
        first.wait()
    finally:
        kill_process_group(first)
    assert not (out / "metrics.json").exists(), "the first run finished before it was killed"
    assert lock.exists()  # left behind by the killed driver

    again = subprocess.run(command, cwd=REPO, env=python_env(**session_ray_env), capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    resumed = re.search(r"resumed from \S+ after epoch (\d+)", again.stdout + again.stderr)
    assert resumed and 1 <= int(resumed[1]) < EPOCHS, (again.stdout + again.stderr)[-3000:]
    assert "taking over the stale lock of training run" in again.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))  # every epoch once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumes"] == 1 and metrics["epochs"] == EPOCHS
    assert not lock.exists()
