"""`ray start --head` with token authentication on 127.0.0.1, then `ray job submit` of the real
training job; the Jobs API refuses requests without the token."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, tiny_synthetic

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head on 127.0.0.1 with RAY_AUTH_MODE=token; stopped (only it) afterwards."""
    dashboard = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the job's `python`
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(24),
        "DISTREC_QUIET": "1",
    }
    cmd = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        # the job agent's HTTP port: Ray's default 52365 may be held by another Ray on this
        # machine (an embedded one of this session), and without it no job can be submitted
        "--dashboard-agent-listen-port", str(free_port()),
        "--num-cpus", "2", "--disable-usage-stats",
    ]  # fmt: skip
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if _status(address, env["RAY_AUTH_TOKEN"]) == 200:
            break
        assert head.poll() is None, "ray start --head exited early"
        time.sleep(1)
    else:
        pytest.fail("the Ray head did not come up in 120 s")
    yield address, env
    # SIGKILL, its whole process group: a graceful stop takes ~30 s (Ray waits on each process
    # in turn) and none is needed here
    os.killpg(head.pid, signal.SIGKILL)
    head.wait()


def _status(address: str, token: str | None) -> int:
    request = urllib.request.Request(f"{address}/api/jobs/")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_jobs_api_refuses_requests_without_the_token(ray_head):
    address, env = ray_head
    assert _status(address, None) == 401
    assert _status(address, "not-the-token") == 403
    assert _status(address, env["RAY_AUTH_TOKEN"]) == 200
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    listing = subprocess.run(["ray", "job", "list", "--address", address], env=no_token, capture_output=True, text=True)
    assert listing.returncode != 0 and "authentication" in (listing.stdout + listing.stderr).lower()


def test_submitted_training_job_runs_on_the_cluster(ray_head, tmp_path):
    address, env = ray_head
    data = str(tmp_path / "data")
    tiny_synthetic(data)
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "data": {"path": data},
                "model": {"name": "mf", "dim": 8},
                "train": {"epochs": 2, "batch_size": 512},
                "ray": {"num_workers": 2, "storage_path": str(tmp_path / "ray")},
                "output_dir": str(tmp_path / "out"),
            }
        )
    )
    for _ in range(12):  # the head's job agent registers a little after the Jobs API answers
        submit = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
             "python", "jobs/train.py", "--config", str(config), "--quiet"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(5)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout + submit.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["num_workers"] == 2 and metrics["test_rmse"] > 0
