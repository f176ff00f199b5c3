"""The local Ray head of ``make ray-up``, ``make submit`` and ``make ray-down`` (jobs/ray_head.py).

A head is a ``ray start --head --block`` in a process group of its own, with token auth, its
Jobs API on 127.0.0.1 and every other server on the node address (127.0.0.1 unless exposed:
Ray's single-machine mode). Starting one refuses when its ports are taken (a training job's
embedded Ray, another head), so a submit can never reach some other Ray by mistake, and writes
a record (``runs/ray-head.json``: addresses, pid, temp dir, log). Submitting and stopping go
through that record: ``submit`` to that head's Jobs API only, ``stop`` ends that head's process
group only (``ray stop`` would end every Ray on the machine, other jobs' embedded ones too).
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

__all__ = ["start_head", "stop_head", "submit", "running_head", "LOOPBACK"]

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
_ALL_INTERFACES = ("0.0.0.0", "::")
_START_TIMEOUT_S = 180
_STOP_GRACE_S = 30
_TEMP_PREFIX = "distrec-ray-"


def start_head(
    *, record: str, host: str = LOOPBACK, port: int = 6379, dashboard_port: int = 8265, num_cpus: int | None = None
) -> dict[str, Any]:
    """Start a head and record it; returns the record. ``host``: the node address its servers
    listen on (127.0.0.1, an address of this machine, or 0.0.0.0 for every interface: other
    machines may then join). The dashboard and Jobs API stay on 127.0.0.1 either way."""
    held = running_head(record)
    if held:
        raise UserError(
            f"a head started by `make ray-up` is already running (pid {held['pid']}, Jobs API {held['dashboard']}, "
            f"recorded in {record}); stop it first with `make ray-down`"
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
        "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
    ]  # fmt: skip
    if host not in _ALL_INTERFACES:
        cmd += ["--node-ip-address", host]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    env = _env()
    if host == LOOPBACK:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else Ray swaps 127.0.0.1 for the host's address
    with open(head_log, "w") as out:
        head = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    dashboard = f"http://{LOOPBACK}:{dashboard_port}"
    try:
        _wait_until_up(head, dashboard, head_log)
    except BaseException:
        _stop_group(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    info = {
        "pid": head.pid,
        "address": f"{host if host not in _ALL_INTERFACES else socket.gethostname()}:{port}",
        "dashboard": dashboard,
        "temp_dir": temp_dir,
        "log": head_log,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    aside = f"{record}.{os.getpid()}"
    Path(aside).write_text(json.dumps(info, indent=1))
    os.replace(aside, record)
    return info


def stop_head(*, record: str) -> dict[str, Any]:
    """Stop the recorded head (its process group, nothing else) and remove the record; returns
    what was stopped (``{}`` when no head was recorded)."""
    try:
        info = json.loads(Path(record).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError(f"{record}: not a head record written by `make ray-up`; remove it by hand") from None
    if _alive(info):
        _stop_group(info["pid"])
    temp_dir = Path(str(info.get("temp_dir", "")))
    if temp_dir.name.startswith(_TEMP_PREFIX) and temp_dir.parent == Path(tempfile.gettempdir()):  # one ray-up made
        shutil.rmtree(temp_dir, ignore_errors=True)
    Path(record).unlink(missing_ok=True)
    return info


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


def _alive(info: dict[str, Any]) -> bool:
    """The record's ``ray start`` still leads its own process group (a reused pid would not)."""
    try:
        pid = int(info["pid"])
        return os.getpgid(pid) == pid
    except (KeyError, TypeError, ValueError, ProcessLookupError, PermissionError):
        return False


def _stop_group(pid: int) -> None:
    """SIGTERM the head's process group; SIGKILL what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (ray-up failing)
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _env() -> dict[str, str]:
    """Token auth, and this environment's ``python`` first on PATH: the head's jobs run the
    project's interpreter with its packages."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "RAY_AUTH_MODE": "token", "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
