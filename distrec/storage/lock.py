"""A lock file that gives one writer at a time a directory (a dataset, an embedding table, a
training run's output), on local disk or in object storage.

Taking it is an exclusive create (``O_EXCL`` locally, a conditional ``If-None-Match: *`` PUT on
S3), so of two writers starting at the same instant one wins and the other refuses, naming the
holder. While held, a background thread renews the lock's heartbeat every quarter lease. A lock
is stale, and is taken over with a warning, when its writer ran on this host and that process is
gone (a killed job, re-run), or when its heartbeat is older than the lease (``LEASE_S``,
``DISTREC_LOCK_LEASE_S``; its writer's host died or lost the store).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from distrec.errors import DataError
from distrec.storage.failures import storage_errors
from distrec.storage.uri import filesystem

__all__ = ["WriterLock", "LEASE_S"]

LEASE_S = float(os.environ.get("DISTREC_LOCK_LEASE_S", "120"))
log = logging.getLogger(__name__)


class WriterLock:
    """``with WriterLock(uri, what="writer") as lock: ... lock.check() ...``; ``uri`` is the lock file."""

    def __init__(self, uri: str, *, what: str = "writer") -> None:
        self.uri = uri
        self.what = what
        self.fs, self.path = filesystem(uri)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self, *, wait_s: float = 0.0) -> None:
        """Take the lock, taking over a stale one; refuse (DataError) if another writer holds it
        after ``wait_s`` seconds of waiting for its lease to run out."""
        deadline = time.time() + wait_s
        while True:
            holder = self._read()
            if holder is None:
                if self._create():
                    break
                continue  # another writer created it first: look at who
            if holder.get("token") == self.token:  # our create, retried by the client after it landed
                break
            if _is_stale(holder):
                log.warning(
                    "%s: taking over the stale lock of %s (pid %s on %s)",
                    self.uri,
                    holder.get("what", "a writer"),
                    holder.get("pid"),
                    holder.get("host"),
                )
                with storage_errors(self.uri, "remove a stale lock"):
                    try:
                        self.fs.rm(self.path)
                    except FileNotFoundError:  # another writer took it over first
                        pass
                continue
            if time.time() >= deadline:
                raise DataError(self._held_message(holder))
            time.sleep(min(5.0, LEASE_S / 8))
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lock heartbeat {self.uri}", daemon=True)
        self._heartbeat.start()

    def check(self) -> None:
        """Raise if another writer has taken the lock over (this one must not commit)."""
        holder = self._read()
        if not holder or holder.get("token") != self.token:
            raise DataError(f"{self.uri}: this {self.what} lost its lock to another writer; not committing")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        holder = self._read()
        if holder and holder.get("token") == self.token:
            with storage_errors(self.uri, "remove the lock"):
                self.fs.rm(self.path)

    # -- internals -------------------------------------------------------------------------
    def _record(self, started: str | None = None) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "token": self.token,
                "what": self.what,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": started or _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat(timespec="seconds"),
                "heartbeat": now,
            }
        ).encode()

    def _create(self) -> bool:
        """Exclusive create of the whole lock record; False if the file exists."""
        data = self._record()
        with storage_errors(self.uri, "take the lock"):
            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
            try:
                if getattr(self.fs, "local_file", False):  # write aside, then link: O_EXCL with the content in place
                    aside = f"{self.path}.{self.token}"
                    with open(aside, "wb") as f:
                        f.write(data)
                    try:
                        os.link(aside, self.path)
                    finally:
                        os.remove(aside)
                else:
                    self.fs.pipe_file(self.path, data, mode="create")  # S3: If-None-Match: *
            except FileExistsError:
                return False
        return True

    def _read(self) -> dict[str, Any] | None:
        with storage_errors(self.uri, "read the lock"):
            try:
                return json.loads(self.fs.cat_file(self.path))
            except FileNotFoundError:
                return None
            except ValueError:  # not a distrec lock record: held by an unknown writer
                return {}

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 4):
            try:
                holder = self._read()
                if not holder or holder.get("token") != self.token:
                    log.warning("%s: lost the lock to another writer", self.uri)
                    return
                self.fs.pipe_file(self.path, self._record(holder.get("started")))
            except Exception as e:  # a flaky store: try again next period; the lease covers a few misses
                log.warning("%s: could not renew the lock (%s)", self.uri, e)

    def _held_message(self, holder: dict[str, Any]) -> str:
        age = time.time() - float(holder.get("heartbeat", time.time()))
        return (
            f"{self.uri}: another {holder.get('what', 'writer')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')}, last heartbeat {age:.0f} s ago) is writing this directory; wait for it to finish "
            f"or write somewhere else. If it is gone, its lock expires {LEASE_S:.0f} s after its last heartbeat "
            f"(or delete the lock file)."
        )


def _is_stale(holder: dict[str, Any]) -> bool:
    """Stale: the writer ran on this host and its process is gone, or its heartbeat is older than the lease."""
    heartbeat = holder.get("heartbeat")
    if isinstance(heartbeat, (int, float)) and time.time() - heartbeat > LEASE_S:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False
