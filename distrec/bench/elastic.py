"""The elastic run's node loss: how long losing a node costs an elastic MF run, from the kill to
training again on the workers left.

The run is biased MF on ``ray.num_workers: [1, 2]`` over a local multi-node cluster (what `make
cluster-local NODES=3` starts: distrec/local_head.py), its checkpoints in a local folder declared
shared. After epoch 2 one worker node is SIGKILLed (raylet and every process of it, no
draining); Ray marks the node dead, Ray Train restarts the run on the node left, and the run
resumes from its last checkpoint with the tables resharded onto 1 worker. ``watch_node_loss``
is the one watcher of such a run: the multi-node test's elastic run goes through it too
(tests/cluster/test_multi_node.py), and grows back there.

The times are Ray's as a user gets them (its health checks and restart timeouts at their
defaults): a driver line's time is when the driver printed it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distrec import local_head
from distrec.loopback import free_port

__all__ = ["ElasticRun", "watch_node_loss", "node_loss_case"]

# Every elastic job's lines (distrec/runtime/epochs.py): training's and the compressor's epochs,
# Distill-CF's steps, and the resume of each, whatever its resize changed
SHRUNK = "(saved by 2 workers, now 1: "
GROWN = "(saved by 1 worker, now 2: "
_PROGRESS = re.compile(r"\b(?:epoch|step) (\d+)/\d+ ")
_RESUMED = re.compile(r"resumed from (.+?) \(saved by ")


@dataclass
class ElasticRun:
    """What the driver of an elastic run printed and when (seconds since it started)."""

    returncode: int
    lines: list[str]  # each line the driver printed, after its time
    times: dict[str, float] = field(default_factory=dict)  # lost, resumed, trained (the next epoch), added, grown
    lost_after: int = 0  # the last epoch (or step) printed before the node was lost
    resumed_from: str = ""  # where the run resumed on 1 worker, as it said (e.g. "epoch 3")
    lost: dict[str, Any] = field(default_factory=dict)  # the lost node's record entry

    @property
    def events(self) -> list[str]:
        return [e for e in ("lost", "resumed", "added", "grown") if e in self.times]

    def tail(self, n: int = 80) -> str:
        return "".join(self.lines[-n:])


def watch_node_loss(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    lose: Callable[[], dict[str, Any]],
    add: Callable[[], None] | None = None,
    lose_after: int = 2,
    timeout_s: float = 600,
) -> ElasticRun:
    """Run the driver ``command`` of an elastic job (train, compress, distill) to its end: once it
    prints epoch (or step) ``lose_after``, ``lose()`` a worker node; once it resumes on 1 worker,
    ``add()`` one (if given), after which it should grow back to 2."""
    driver = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run, start = ElasticRun(returncode=-1, lines=[]), time.monotonic()
    try:
        for line in driver.stdout:  # type: ignore[union-attr]
            now = time.monotonic() - start
            run.lines.append(f"{now:6.1f} {line}")
            epoch = _PROGRESS.search(line)
            if "lost" not in run.times and epoch and int(epoch.group(1)) >= lose_after:
                run.lost_after = int(epoch.group(1))
                run.lost = lose()
                run.times["lost"] = time.monotonic() - start
            elif "lost" in run.times and "resumed" not in run.times and SHRUNK in line:
                run.times["resumed"] = now
                run.resumed_from = _RESUMED.search(line).group(1)  # type: ignore[union-attr]
                if add is not None:
                    add()
                    run.times["added"] = time.monotonic() - start
            elif "resumed" in run.times and "trained" not in run.times and epoch:
                run.times["trained"] = now
            elif "added" in run.times and "grown" not in run.times and GROWN in line:
                run.times["grown"] = now
        run.returncode = driver.wait(timeout=timeout_s)
    finally:
        driver.kill()
    return run


def node_loss_case(data: str, epochs: int) -> dict[str, Any]:
    """MF on ``data`` over a 3-node local cluster (head + 2 worker nodes of 1 CPU), a worker node
    lost after epoch 2: seconds from the kill to the resume on 1 worker (``resumed_s``: Ray
    noticing, the restart, the resharded restore) and to its first epoch done (``seconds``)."""
    # this case's process only (the harness spawns one a case): the cluster's own token
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(24), DISTREC_QUIET="1")
    os.environ.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="distrec-bench-elastic-") as work:
        return _node_loss(work, data, epochs)


def _node_loss(work: str, data: str, epochs: int) -> dict[str, Any]:
    record = os.path.join(work, "ray-head.json")
    info = local_head.start_head(record=record, port=free_port(), dashboard_port=free_port(), num_cpus=0, nodes=3)
    try:
        config = Path(work) / "elastic.json"
        config.write_text(json.dumps({
            "data": {"path": data}, "model": {"name": "mf", "dim": 64},
            "train": {"epochs": epochs, "global_batch_size": 8192, "seed": 0},
            "ray": {"num_workers": [1, 2], "storage_path": f"{work}/ray", "max_failures": 2,
                    "shared_paths": [work, os.path.dirname(os.path.abspath(data))]},  # every node is this machine
            "output_dir": f"{work}/out",
        }))  # fmt: skip
        repo = str(Path(__file__).resolve().parents[2])
        run = watch_node_loss(
            [sys.executable, "jobs/train.py", "--config", str(config), f"ray.address={info['address']}"],
            env={**os.environ, "PYTHONPATH": repo}, cwd=repo,
            lose=lambda: local_head.kill_node(record=record, resource="node_2"),
        )  # fmt: skip
    finally:
        local_head.stop_head(record=record)
    if run.returncode != 0 or "trained" not in run.times:
        raise RuntimeError(f"the elastic run did not go on after the node loss (exit {run.returncode}):\n{run.tail()}")
    metrics = json.loads((Path(work) / "out" / "metrics.json").read_text())
    lost = run.times["lost"]
    return {"seconds": run.times["trained"] - lost, "units": 1, "resumed_s": run.times["resumed"] - lost,
            "lost_after_epoch": run.lost_after, "resumed_from": run.resumed_from, "epochs": epochs,
            "resumes": metrics["resumes"], "val_rmse": metrics["val_rmse"]}  # fmt: skip
