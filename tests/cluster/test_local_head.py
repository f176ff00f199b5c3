"""The head of `make ray-up` (jobs/ray_head.py): it refuses taken ports, records itself, and
`make submit` / `make ray-down` address that head and only that head (the repro of a submit that
landed on the wrong Ray and a `ray stop` that killed every Ray on the machine). The same head code
started with worker nodes (`make cluster-local`) is run for real in tests/cluster/test_multi_node.py:
a submitted job lands on the recorded head's nodes, a second head on the same record is refused,
and stopping it leaves another Ray (the test process's own) running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def _head(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/ray_head.py", *args],
        cwd=REPO,
        env=env or os.environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ray_up_refuses_a_taken_port_and_starts_nothing(tmp_path):
    record = tmp_path / "head.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flag in ("--dashboard-port", "--port"):
            other = "--port" if flag == "--dashboard-port" else "--dashboard-port"
            up = _head("--record", str(record), "up", flag, str(port), other, str(free_port()))
            assert up.returncode == 2, up.stdout + up.stderr
            assert f"port {port} on 127.0.0.1 is taken" in up.stderr and "Traceback" not in up.stderr
    assert not record.exists()


def test_submit_and_down_without_a_recorded_head(tmp_path):
    record = str(tmp_path / "head.json")
    submit = _head("--record", record, "submit", "--", "python", "jobs/train.py", "--help")
    assert submit.returncode == 2 and "no local Ray head is running" in submit.stderr and "make ray-up" in submit.stderr
    down = _head("--record", record, "down")
    assert down.returncode == 0 and "nothing stopped" in down.stdout


def test_make_targets_address_the_recorded_head_and_never_run_ray_stop():
    dry = subprocess.run(
        ["make", "-n", "ray-up", "submit", "ray-down", "RAY_HEAD=x/head.json", "CONFIG=c.yaml", "RAY_HOST=0.0.0.0"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "jobs/ray_head.py --record x/head.json up --host 0.0.0.0 --port 6379 --dashboard-port 8265" in dry.stdout
    assert "jobs/ray_head.py --record x/head.json submit -- python jobs/train.py --config c.yaml" in dry.stdout
    assert "jobs/ray_head.py --record x/head.json down" in dry.stdout
    assert "ray stop" not in dry.stdout
