"""A real multi-node Ray cluster on this machine: what `make cluster-local NODES=3` starts (a
token-authenticated head that schedules nothing and 2 worker nodes of 1 CPU each, every node a
raylet of its own on 127.0.0.1, with its own temp dir and a custom resource ``node_<i>``).

Jobs reach it as users' do: each driver is a subprocess (``jobs/train.py ... ray.address=...``
or ``make submit``). The pytest process keeps its embedded Ray (tests/conftest.py ``local_ray``)
for the other tests: a process joins one Ray at a time, and leaving the embedded one to join
the cluster would restart it for every later module.

The nodes inherit this process's environment, as a cluster-local's nodes inherit the user's
shell: with ``s3_server`` first, the moto endpoint and test credentials (a real cluster's nodes
get S3 credentials from an instance role; the endpoint of an S3-compatible store comes with the
job, forwarded by the driver to its workers).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from distrec import local_head
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def make(*targets: str, env: dict[str, str], timeout: float = 600, **variables: Any) -> subprocess.CompletedProcess:
    """The Makefile's targets as a user runs them, without `setup` (the suite runs in the installed environment)."""
    command = ["make", "--no-print-directory", "-o", "setup", *targets, *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class LocalCluster:
    """The module's cluster: its record (what `make cluster-local` wrote), a client's environment
    (its token, this checkout on PYTHONPATH) and the ways a test changes it (``kill_node``,
    ``add_node``: distrec/local_head.py, the one way its nodes start and stop)."""

    record: Path
    env: dict[str, str]

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(self.record.read_text())

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def worker_nodes(self) -> dict[str, str]:
        """The recorded worker nodes' Ray node ids by ``node_<i>`` resource."""
        return {w["resource"]: w["node_id"] for w in self.info["workers"]}

    def alive(self) -> dict[str, str]:
        """The nodes the head lists alive (its own included): node id by ``node_<i>`` resource."""
        with patch.dict(os.environ, self.env):
            return local_head.alive_nodes(self.info["dashboard"])

    def kill_node(self, i: int) -> dict[str, Any]:
        """Worker node ``node_<i>`` lost as a machine is: its raylet and every process of it SIGKILLed."""
        return local_head.kill_node(record=str(self.record), resource=f"node_{i}")

    def add_node(self, num_cpus: int = 1) -> dict[str, Any]:
        """One more worker node (the next ``node_<i>``, its own temp dir), joined with the token."""
        with patch.dict(os.environ, self.env):
            return local_head.add_node(record=str(self.record), num_cpus=num_cpus)

    def refresh_elastic_view(self) -> None:
        """Ray Train's elastic decisions see the nodes through Ray's AutoscalingCoordinator actor,
        which reads them every 20 s; ask it to read them now (what its next tick would do), so a
        test's run needn't outlast that wait to see an added node."""
        ask = (
            "import sys, ray; from distrec.runtime.ray import connect_ray; connect_ray(sys.argv[1]); "
            "c = ray.get_actor('AutoscalingCoordinator', namespace='AutoscalingCoordinator'); "
            "ray.get(c.get_reserved_resources.remote('distrec-test', recompute=True))"
        )
        done = subprocess.run(
            [sys.executable, "-c", ask, self.address], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def job(self, script: str, *args: str, address_key: str = "ray.address", timeout: float = 600) -> subprocess.CompletedProcess:
        """``python jobs/<script> ... ray.address=<this cluster>``: a driver joining from outside
        (a sweep's key is ``ray_address``)."""
        command = [sys.executable, f"jobs/{script}", *args, f"{address_key}={self.address}"]
        return subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def local_cluster(s3_server, tmp_path_factory) -> LocalCluster:
    """`make cluster-local NODES=3` on free ports, recorded in a temp file; `make
    cluster-local-down` afterwards (a no-op when a test already stopped it)."""
    record = tmp_path_factory.mktemp("cluster") / "ray-head.json"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(24),  # never ~/.ray/auth_token: this cluster's own
        "PYTHONPATH": str(REPO),
        "DISTREC_QUIET": "1",
        # the head marks a killed node dead after 5 failed health checks, 1 s apart (Ray's default: 3 s)
        "RAY_health_check_period_ms": "1000",
    }
    env.pop("RAY_ADDRESS", None)
    up = make(
        "cluster-local", env=env, NODES=3, NODE_CPUS=1, RAY_HEAD=record, RAY_PORT=free_port(), RAY_DASHBOARD_PORT=free_port()
    )
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield LocalCluster(record=record, env=env)
    finally:
        make("cluster-local-down", env=env, RAY_HEAD=record)
