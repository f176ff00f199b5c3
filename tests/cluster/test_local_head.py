"""The head of `make ray-up` (jobs/ray_head.py): it refuses taken ports, records itself, and
`make submit` / `make ray-down` reach that head and only that head, while another training job
runs beside it on its own embedded Ray (the repro of a submit that landed on the wrong Ray and
a `ray stop` that killed every Ray on the machine)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import registered_checkpoints, wait_for
from tests.helpers import free_port, tiny_synthetic

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


def _train_config(path: Path, data: str, out: Path, **extra) -> Path:
    cfg = {"data": {"path": data}, "model": {"name": "mf", "dim": 8}, "train": {"batch_size": 512}, "output_dir": str(out)}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(json.dumps(cfg))
    return path


def _head_processes(temp_dir: str) -> list[int]:
    import psutil
    import ray  # noqa: F401  (puts its vendored packages, psutil among them, on sys.path)

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in p.info["cmdline"] or ()):
            found.append(p.info["pid"])
    return found


@pytest.mark.slow
def test_submit_lands_on_the_recorded_head_and_ray_down_leaves_another_job_running(tmp_path):
    data = str(tmp_path / "data")
    tiny_synthetic(data, ratings=6000, users=200, items=100)
    token = secrets.token_hex(24)
    env = {**os.environ, "RAY_AUTH_TOKEN": token, "DISTREC_QUIET": "1", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)

    # A training job on its own embedded Ray, long enough to outlive everything below: Train's
    # controller polling every 2 s (Ray's default, set over distrec's 0.1 s as a user can) makes
    # each of its tiny epochs take ~2 s, and keeps it from competing for the CPUs meanwhile.
    embedded_cfg = _train_config(
        tmp_path / "embedded.yaml", data, tmp_path / "embedded-out",
        train={"epochs": 500},
        # checkpoints_to_keep: one per epoch
        ray={"num_workers": 1, "storage_path": str(tmp_path / "ray"), "name": "embedded", "checkpoints_to_keep": 500},
    )  # fmt: skip
    embedded = subprocess.Popen(
        [sys.executable, "jobs/train.py", "--config", str(embedded_cfg), "--quiet"], cwd=REPO,
        env={**env, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    record = tmp_path / "ray-head.json"
    try:
        checkpoints = tmp_path / "ray" / "embedded"
        wait_for(
            lambda: registered_checkpoints(checkpoints), timeout=300, what="the embedded job's first epoch", process=embedded
        )

        dashboard_port = free_port()
        up = _head(
            "--record",
            str(record),
            "up",
            "--port",
            str(free_port()),
            "--dashboard-port",
            str(dashboard_port),
            "--num-cpus",
            "2",
            env=env,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        head = json.loads(record.read_text())
        assert head["dashboard"] == f"http://127.0.0.1:{dashboard_port}" and head == json.loads(
            up.stdout.strip().splitlines()[-1]
        )
        again = _head("--record", str(record), "up", "--port", str(free_port()), "--dashboard-port", str(free_port()), env=env)
        assert again.returncode == 2 and "already running" in again.stderr

        submitted_cfg = _train_config(
            tmp_path / "submitted.yaml", data, tmp_path / "submitted-out",
            train={"epochs": 1}, ray={"num_workers": 1, "storage_path": str(tmp_path / "ray")},
        )  # fmt: skip
        submit = _head(
            "--record", str(record), "submit", "--", "python", "jobs/train.py", "--config", str(submitted_cfg), "--quiet", env=env
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert json.loads((tmp_path / "submitted-out" / "metrics.json").read_text())["epochs"] == 1
        jobs = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "list", "--address", head["dashboard"]],
            env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "submitted.yaml" in jobs.stdout and "SUCCEEDED" in jobs.stdout, jobs.stdout + jobs.stderr  # on this head

        assert _head_processes(head["temp_dir"])
        done_before = len(registered_checkpoints(checkpoints))
        down = _head("--record", str(record), "down", env=env)
        assert down.returncode == 0 and f"stopped the Ray head pid {head['pid']}" in down.stdout, down.stdout + down.stderr
        assert not record.exists() and not _head_processes(head["temp_dir"])
        assert embedded.poll() is None  # the other job and its Ray still run ...
        wait_for(
            lambda: len(registered_checkpoints(checkpoints)) > done_before,
            timeout=300,
            what="the embedded job's next epoch",
            process=embedded,
        )
    finally:
        if record.exists():
            _head("--record", str(record), "down", env=env)
        os.killpg(embedded.pid, signal.SIGTERM)  # ... until this test ends it
        try:
            embedded.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(embedded.pid, signal.SIGKILL)
            embedded.wait()
