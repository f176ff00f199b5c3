"""Fault injection for the reliability tests: a flaky HTTP proxy in front of the moto S3 server,
writers SIGKILLed between shards, and what a test needs to kill real processes and clean up.

- ``FaultyProxy``: an HTTP proxy on 127.0.0.1 that drops connections, answers 500/503 or
  answers slowly for a given fraction of requests (seeded), at most ``max_consecutive`` times in a
  row for the same request, so a client that retries enough always gets through; with
  ``rate=1`` and ``max_consecutive=None`` it is a store that is permanently down.
- ``sigkill_after_writes``: runs ``module:function(*args)`` in a fresh Python process that
  SIGKILLs itself right after its N-th ``DirectoryWriter`` file write: a writer killed between
  shards, deterministically, whatever the writer (prepare, embedding export, compressor codes,
  distilled data); ``sigkill_on_call`` kills it when it reaches a named step of the commit.
- ``kill_when``: SIGKILL a running job (a real ``jobs/*.py`` process) once a condition holds.
- ``registered_checkpoints``: the checkpoints Ray Train's controller has recorded for a run.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

FAULTS = ("drop", "drop_after", "500", "503", "slow")
_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>faulty-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}


class FaultyProxy:
    """``rate`` of the requests get one of ``faults`` (chosen with ``random.Random(seed)``):

    - ``drop``: the connection is closed before the request reaches the store;
    - ``drop_after``: the store handles the request, then the connection is closed unanswered
      (a retried write has already happened once);
    - ``500`` / ``503``: an S3 ``InternalError`` / ``SlowDown`` answer;
    - ``slow``: the answer comes ``delay_s`` late.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.25,
        seed: int = 0,
        faults: Sequence[str] = FAULTS,
        max_consecutive: int | None = 2,
        delay_s: float = 0.3,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.rate, self.faults, self.max_consecutive, self.delay_s = rate, list(faults), max_consecutive, delay_s
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()  # fault -> times injected
        self.requests = 0
        self._streak: Counter[str] = Counter()  # request -> faults in a row
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def choose(self, key: str) -> str | None:
        """The fault for this request, or None to pass it through."""
        with self._lock:
            self.requests += 1
            capped = self.max_consecutive is not None and self._streak[key] >= self.max_consecutive
            if capped or self.rng.random() >= self.rate:
                self._streak.pop(key, None)
                return None
            fault = self.rng.choice(self.faults)
            self._streak[key] += 1
            self.injected[fault] += 1
            return fault


def _handler(proxy: FaultyProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            conn.close()
            return response.status, response.getheaders(), data

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _handle(self) -> None:
            body = self._body()
            fault = proxy.choose(f"{self.command} {self.path} {self.headers.get('Range', '')}")
            if fault == "drop":
                return self._drop()
            if fault in ("500", "503"):
                code, message = ("InternalError", "injected") if fault == "500" else ("SlowDown", "injected")
                data = _ERROR_BODY.format(code=code, message=message).encode()
                self.send_response(int(fault))
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            status, headers, data = self._forward(body)
            if fault == "drop_after":
                return self._drop()
            if fault == "slow":
                time.sleep(proxy.delay_s)
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP and not (k.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


# -- killed processes ---------------------------------------------------------------------------
def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout's distrec and tests."""
    return {**os.environ, "PYTHONPATH": str(REPO), "DISTREC_QUIET": "1", **extra}


def sigkill_after_writes(
    target: str, *args: Any, writes: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``module:function(*args)`` (JSON-able args) in a new Python process that SIGKILLs itself
    right after its ``writes``-th ``DirectoryWriter`` file write; returns the finished process."""
    return _run_killed(target, args, {"writes": writes}, env)


def sigkill_on_call(target: str, *args: Any, method: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Like ``sigkill_after_writes``, but the process SIGKILLs itself when it calls
    ``DirectoryWriter.<method>`` (``_replace_manifest``: before the new manifest is in place;
    ``_remove_previous``: right after it replaced the old one)."""
    return _run_killed(target, args, {"method": method}, env)


def _run_killed(target: str, args: tuple, when: dict[str, Any], env: dict[str, str] | None) -> subprocess.CompletedProcess:
    code = "import sys, tests.faults as f; f._killed_child(sys.argv[1], sys.argv[2], sys.argv[3])"
    done = subprocess.run(
        [sys.executable, "-c", code, target, json.dumps(when), json.dumps(args)],
        cwd=REPO, env=env or python_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, f"expected a SIGKILL, got exit {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def _killed_child(target: str, when: str, args: str) -> None:
    import importlib

    from distrec.storage import DirectoryWriter

    kill = json.loads(when)
    count = 0
    if "writes" in kill:
        write_bytes = DirectoryWriter.write_bytes

        def write_then_maybe_die(self, path, data, *, rows):  # type: ignore[no-untyped-def]
            nonlocal count
            entry = write_bytes(self, path, data, rows=rows)
            count += 1
            if count == kill["writes"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return entry

        DirectoryWriter.write_bytes = write_then_maybe_die  # type: ignore[method-assign]
    else:
        setattr(DirectoryWriter, kill["method"], lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(*json.loads(args))
    raise SystemExit(f"{target} finished after {count} write(s); it was to be killed at {kill}")


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, process: subprocess.Popen | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail if ``process`` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kill_when(process: subprocess.Popen, condition: Callable[[], Any], *, timeout: float, what: str) -> None:
    """SIGKILL ``process`` (only it) as soon as ``condition`` holds."""
    wait_for(condition, timeout=timeout, what=what, process=process)
    process.kill()
    process.wait()


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL what is left of a child started with ``start_new_session=True`` (its own group:
    e.g. the Ray daemons of a killed driver's embedded cluster)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def registered_checkpoints(run_dir: Path) -> list:
    """Checkpoints Ray Train's controller has recorded (a folder alone may be an upload in flight)."""
    try:
        return json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []
