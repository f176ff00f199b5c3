"""The local Ray head of ``make ray-up``, ``make submit`` and ``make ray-down`` (jobs/ray_head.py),
and the local cluster of ``make cluster-local`` / ``make cluster-local-down``: that head plus
worker nodes on this machine.

A head is a ``ray start --head --block`` in a process group of its own, with token auth, its
Jobs API on 127.0.0.1 and every other server on the node address (127.0.0.1 unless exposed:
Ray's single-machine mode). Starting one refuses when its ports are taken (a training job's
embedded Ray, another head), so a submit can never reach some other Ray by mistake, and writes
a record (``runs/ray-head.json``: addresses, pid, temp dir, log). Submitting and stopping go
through that record: ``submit`` to that head's Jobs API only, ``stop`` ends that head's process
group only (``ray stop`` would end every Ray on the machine, other jobs' embedded ones too).

A local cluster (``nodes`` > 1) adds worker nodes (``add_node``), each a ``ray start --block``
in a process group and temp dir of its own (as a separate machine has its own disk), with its
own CPUs and a custom resource ``node_<i>`` (the head is ``node_0``); the record lists them with
their Ray node ids, and stopping the head stops them. ``kill_node`` ends one as a lost machine
would (SIGKILL to its raylet and every process of the node). Ray alone would not build it on
127.0.0.1: ``ray start`` refuses to join a cluster in single-machine mode, and in multi-node
mode rewrites 127.0.0.1 to the machine's network address and listens on every interface. So a
worker node's ``ray start`` runs through ``loopback_ray_start``, which keeps 127.0.0.1, and its
processes run in single-machine mode as the head's do: the whole cluster, gloo included,
listens on the loopback interface only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distrec.errors import UserError
from distrec.loopback import free_port, gloo_on_loopback

__all__ = [
    "start_head",
    "processes_under",
    "stop_head",
    "add_node",
    "kill_node",
    "alive_nodes",
    "submit",
    "running_head",
    "loopback_ray_start",
    "LOOPBACK",
]

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
_ALL_INTERFACES = ("0.0.0.0", "::")
_START_TIMEOUT_S = 180
_STOP_GRACE_S = 30
_HEAD_GRACE_S = 5  # the head's, once its worker nodes are gone (_stop_groups)
_TEMP_PREFIX = "distrec-ray-"
_NODE_STARTED = "Ray runtime started"  # what `ray start` logs once its node runs


def start_head(
    *,
    record: str,
    host: str = LOOPBACK,
    port: int = 6379,
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
    nodes: int = 1,
    node_cpus: int = 1,
) -> dict[str, Any]:
    """Start a head and record it; returns the record. ``host``: the node address its servers
    listen on (127.0.0.1, an address of this machine, or 0.0.0.0 for every interface: other
    machines may then join). The dashboard and Jobs API stay on 127.0.0.1 either way.
    ``nodes`` > 1: a local cluster on 127.0.0.1, the head plus ``nodes - 1`` worker nodes of
    ``node_cpus`` CPUs each, recorded under ``workers``."""
    if nodes > 1 and host != LOOPBACK:
        raise UserError(
            f"a local cluster of {nodes} nodes runs on {LOOPBACK} only. To let other machines join, start a head "
            f"with `make ray-up RAY_HOST=0.0.0.0` and run `ray start --address=<this machine>:{port}` on each of them"
        )
    held = running_head(record)
    if held:
        raise UserError(
            f"a head started by `make ray-up` or `make cluster-local` is already running (pid {held['pid']}, Jobs API "
            f"{held['dashboard']}, recorded in {record}); stop it first with `make ray-down` or `make cluster-local-down`"
        )
    for what, bind_host, number in (
        ("GCS", LOOPBACK if host not in _ALL_INTERFACES else host, port),
        ("dashboard/Jobs API", LOOPBACK, dashboard_port),
    ):
        _check_free(what, bind_host, number)
    temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX)  # short: Ray's socket paths live under it
    head_log = os.path.join(temp_dir, "head.log")
    cmd = [
        _ray(), "start", "--head", "--block", "--disable-usage-stats",
        "--port", str(port), "--temp-dir", temp_dir,
        "--include-dashboard", "true", "--dashboard-host", LOOPBACK, "--dashboard-port", str(dashboard_port),
        "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
    ]  # fmt: skip
    if host not in _ALL_INTERFACES:
        cmd += ["--node-ip-address", host]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if nodes > 1:
        cmd += ["--resources", json.dumps({"node_0": 1})]
    env = _env(loopback_port=port if host == LOOPBACK else None)
    with open(head_log, "w") as out:
        head = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    dashboard = f"http://{LOOPBACK}:{dashboard_port}"
    workers: list[dict[str, Any]] = []
    try:
        _wait_until_up(head, dashboard, head_log)
        workers = [_start_node(i, port=port, num_cpus=node_cpus) for i in range(1, nodes)]
        node_ids = _wait_for_nodes(workers, dashboard) if workers else {}
    except BaseException:
        _stop_groups([head.pid, *(w["pid"] for w in workers)])
        for folder in [temp_dir, *(w["temp_dir"] for w in workers)]:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    info: dict[str, Any] = {
        "pid": head.pid,
        "address": f"{host if host not in _ALL_INTERFACES else socket.gethostname()}:{port}",
        "dashboard": dashboard,
        "temp_dir": temp_dir,
        "log": head_log,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if workers:
        info["node_id"] = node_ids["node_0"]
        info["workers"] = [{**w, "node_id": node_ids[w["resource"]]} for w in workers]
        info["next_node"] = nodes
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    _write_record(record, info)
    return info


def stop_head(*, record: str) -> dict[str, Any]:
    """Stop the recorded head and its worker nodes (their process groups, nothing else) and
    remove the record; returns what was stopped (``{}`` when no head was recorded)."""
    try:
        info = json.loads(Path(record).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError(f"{record}: not a head record written by `make ray-up`; remove it by hand") from None
    nodes = [info, *info.get("workers", [])]
    _stop_groups([int(n["pid"]) for n in nodes[1:] if _alive(n)])  # the worker nodes first, while the head hears them leave
    _stop_groups([int(info["pid"])] if _alive(info) else [], whole_group=True, grace_s=_HEAD_GRACE_S)
    for node in nodes:
        _remove_temp_dir(node)
    Path(record).unlink(missing_ok=True)
    return info


def add_node(*, record: str, num_cpus: int = 1) -> dict[str, Any]:
    """One more worker node for the recorded local cluster (``make cluster-local``): its own
    temp dir, ``num_cpus`` CPUs and the next ``node_<i>`` resource, joined to the head with the
    token; returns its entry, which the record lists under ``workers``."""
    info = running_head(record)
    if not info or "workers" not in info:
        raise UserError(f"no local cluster is running (none recorded in {record}): start one with `make cluster-local`")
    index = info.get("next_node", len(info["workers"]) + 1)  # a lost node's name is not reused
    node = _start_node(index, port=int(info["address"].rpartition(":")[2]), num_cpus=num_cpus)
    try:
        node["node_id"] = _wait_for_nodes([node], info["dashboard"])[node["resource"]]
    except BaseException:
        _stop_groups([node["pid"]])
        _remove_temp_dir(node)
        raise
    info["workers"].append(node)
    info["next_node"] = index + 1
    _write_record(record, info)
    return node


def kill_node(*, record: str, resource: str) -> dict[str, Any]:
    """Worker node ``resource`` (``node_<i>``) of the recorded local cluster lost, as a machine
    is: SIGKILL to its raylet and every process of the node at once, no draining; it leaves the
    record. Returns its entry."""
    info = json.loads(Path(record).read_text())
    node = next((w for w in info.get("workers", []) if w["resource"] == resource), None)
    if node is None:
        raise UserError(f"{record} records no worker node {resource!r}")
    group = int(node["pid"])
    kills = [(os.killpg, group)] + [(os.kill, pid) for pid in processes_under(node["temp_dir"])]  # + any outside its group
    for kill, pid in kills:
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _wait_gone([group], 10, group=True)  # reaps its `ray start` when it is our child
    _remove_temp_dir(node)
    info["workers"] = [w for w in info["workers"] if w is not node]
    _write_record(record, info)
    return node


def alive_nodes(dashboard: str) -> dict[str, str]:
    """The live nodes of the local cluster whose dashboard is at ``dashboard``: Ray node id by
    ``node_<i>`` resource (``{}`` when the head does not answer)."""
    listed = subprocess.run(
        [_ray(), "list", "nodes", "--address", dashboard, "--format", "json", "--detail", "--filter", "state=ALIVE"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if listed.returncode != 0:
        return {}
    return {
        name: n["node_id"] for n in json.loads(listed.stdout) for name in n.get("resources_total", {}) if name.startswith("node_")
    }


def running_head(record: str) -> dict[str, Any] | None:
    """The recorded head if it is still running; a record of a head that is gone is removed."""
    try:
        info = json.loads(Path(record).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(info):
        return info
    log.warning("%s: the head it records (pid %s) is gone; removing the record", record, info.get("pid"))
    Path(record).unlink(missing_ok=True)
    return None


def submit(*, record: str, command: Sequence[str], working_dir: str = ".") -> int:
    """``ray job submit`` of ``command`` to the recorded head's Jobs API; its output streams
    through, and its exit code is returned. Refuses (UserError) when no head is running."""
    info = running_head(record)
    if not info:
        raise UserError(f"no local Ray head is running (none recorded in {record}): start one with `make ray-up`")
    cmd = [_ray(), "job", "submit", "--address", info["dashboard"], "--working-dir", working_dir, "--", *command]
    deadline = time.time() + 60
    while True:  # the head's job agent registers a few seconds after its Jobs API answers
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        no_agent = False
        for line in proc.stdout:  # type: ignore[union-attr]
            no_agent = no_agent or "No available agent" in line
            print(line, end="", flush=True)  # relayed as it comes: the job's own progress
        if proc.wait() == 0 or not no_agent or time.time() > deadline:
            return proc.returncode
        time.sleep(3)


def loopback_ray_start() -> None:
    """``ray start`` with this process's arguments, for a worker node of a cluster on 127.0.0.1
    (``_start_node`` runs it in a process of its own). Ray's command refuses to join a cluster
    in single-machine mode and, in multi-node mode, rewrites 127.0.0.1 in ``--address`` and
    ``--node-ip-address`` to the machine's network address. Here it runs in multi-node mode with
    loopback addresses kept as given; the node's own processes inherit single-machine mode
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and so listen on 127.0.0.1, as the head's do."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray.scripts.scripts import main

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host
    sys.argv = ["ray", *sys.argv[1:]]
    main()


def _start_node(index: int, *, port: int, num_cpus: int) -> dict[str, Any]:
    """Worker node ``node_<index>`` joining the loopback head at ``port``; returns its entry."""
    temp_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
    node_log = os.path.join(temp_dir, "node.log")
    resource = f"node_{index}"
    cmd = [
        sys.executable, "-c", "from distrec.local_head import loopback_ray_start; loopback_ray_start()",
        "start", "--block", "--disable-usage-stats", "--address", f"{LOOPBACK}:{port}", "--node-ip-address", LOOPBACK,
        "--temp-dir", temp_dir, "--num-cpus", str(num_cpus), "--resources", json.dumps({resource: 1}),
        "--dashboard-agent-listen-port", str(free_port()),
    ]  # fmt: skip
    with open(node_log, "w") as out:
        node = subprocess.Popen(
            cmd, env=_env(loopback_port=port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return {"pid": node.pid, "resource": resource, "num_cpus": num_cpus, "temp_dir": temp_dir, "log": node_log}


def _wait_for_nodes(nodes: list[dict[str, Any]], dashboard: str) -> dict[str, str]:
    """Wait until every node of ``nodes`` has started and the head lists it alive; returns the
    Ray node id of each live node (the head's included) by its ``node_<i>`` resource."""
    deadline = time.time() + _START_TIMEOUT_S
    waiting = list(nodes)
    while waiting and time.time() < deadline:
        for node in list(waiting):
            if not _alive(node):
                raise UserError(f"`ray start` of worker node {node['resource']} failed:\n{_tail(node['log'])}")
            if _NODE_STARTED in Path(node["log"]).read_text(errors="replace"):
                waiting.remove(node)
        time.sleep(0.5)
    ids: dict[str, str] = {}
    while not waiting and time.time() < deadline:
        ids = alive_nodes(dashboard)
        if all(n["resource"] in ids for n in nodes):
            return ids
        time.sleep(1)
    missing = [n["resource"] for n in nodes if n["resource"] not in ids]
    logs = "\n".join(_tail(n["log"]) for n in nodes if n["resource"] in missing)
    raise UserError(f"worker node(s) {missing} did not join the head within {_START_TIMEOUT_S} s:\n{logs}")


def processes_under(temp_dir: str) -> list[int]:
    """The processes whose command line names ``temp_dir`` (a node's: its raylet, workers, agents)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if temp_dir.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _write_record(record: str, info: dict[str, Any]) -> None:
    aside = f"{record}.{os.getpid()}"
    Path(aside).write_text(json.dumps(info, indent=1))
    os.replace(aside, record)


def _remove_temp_dir(node: dict[str, Any]) -> None:
    temp_dir = Path(str(node.get("temp_dir", "")))
    if temp_dir.name.startswith(_TEMP_PREFIX) and temp_dir.parent == Path(tempfile.gettempdir()):  # one we made
        shutil.rmtree(temp_dir, ignore_errors=True)


def _alive(info: dict[str, Any]) -> bool:
    """The record's ``ray start`` still leads its own process group (a reused pid would not)."""
    try:
        pid = int(info["pid"])
        return os.getpgid(pid) == pid
    except (KeyError, TypeError, ValueError, ProcessLookupError, PermissionError):
        return False


def _stop_groups(pids: Sequence[int], *, whole_group: bool = False, grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM each node's ``ray start`` (``whole_group``: every process of its group), all at
    once, and wait (``grace_s`` at most) until each has stopped; then SIGKILL what is left of
    their process groups (workers that outlive their raylet).

    Worker nodes stop first, each by its ``ray start`` (which stops its raylet once the node has
    left the cluster), while the head still hears them leave: SIGTERM to their whole groups, or
    to the head at the same time, leaves each node waiting out a 30 s timeout. The head stops
    last, its whole group: once a job has run, its GCS and raylet linger for 30 s on SIGTERM,
    with nothing left to save, so it gets ``_HEAD_GRACE_S``."""
    for pid in pids:
        try:
            (os.killpg if whole_group else os.kill)(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _wait_gone(pids, grace_s, group=whole_group)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(pids, 10, group=True)


def _wait_gone(pids: Sequence[int], wait_s: float, *, group: bool) -> None:
    """Wait until the processes (``group``: their process groups) are gone, ``wait_s`` at most."""
    left = list(pids)
    deadline = time.time() + wait_s
    while left and time.time() < deadline:
        for pid in list(left):
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (ray-up failing, add_node)
            except ChildProcessError:
                pass
            if not _running(pid, group=group):
                left.remove(pid)
        time.sleep(0.2)


def _running(pid: int, *, group: bool) -> bool:
    """Whether process ``pid`` (``group``: any process of its group) still runs. A zombie does
    not: an exited node whose parent is gone waits for whoever adopted it to reap it."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    if not Path("/proc/self/stat").exists():
        return True
    for stat in Path("/proc").glob("[0-9]*/stat") if group else [Path(f"/proc/{pid}/stat")]:
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # state, ppid, pgrp, ...
        except OSError:
            continue
        if fields[0] != "Z" and (not group or int(fields[2]) == pid):
            return True
    return False


def _wait_until_up(head: subprocess.Popen, dashboard: str, head_log: str) -> None:
    deadline = time.time() + _START_TIMEOUT_S
    while time.time() < deadline:
        if head.poll() is not None:
            raise UserError(f"`ray start --head` failed (exit {head.returncode}):\n{_tail(head_log)}")
        try:
            with urllib.request.urlopen(f"{dashboard}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:  # it answers (401 without the token): up
            return
        except OSError:
            time.sleep(1)
    raise UserError(f"the Ray head's Jobs API did not answer at {dashboard} within {_START_TIMEOUT_S} s:\n{_tail(head_log)}")


def _check_free(what: str, host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(
                f"cannot start a Ray head: the {what} port {port} on {host} is taken ({e.strerror or e}), maybe by another "
                f"Ray (a running job's embedded one, or a head `make ray-up` started: `make ray-down` stops that one). "
                f"Choose free ports: make ray-up RAY_PORT=... RAY_DASHBOARD_PORT=..."
            ) from None


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _env(*, loopback_port: int | None = None) -> dict[str, str]:
    """Token auth, and this environment's ``python`` first on PATH: the head's jobs run the
    project's interpreter with its packages. A node of a head on 127.0.0.1 (``loopback_port``)
    adds Ray's single-machine mode (else Ray swaps 127.0.0.1 for the host's address), gloo on
    the loopback interface, and $RAY_ADDRESS naming this cluster to its own processes (Train's
    placement-group cleaner otherwise joins whichever Ray on the machine started last)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    if loopback_port is not None:
        env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_ADDRESS=f"{LOOPBACK}:{loopback_port}", **gloo_on_loopback())
    return env


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
