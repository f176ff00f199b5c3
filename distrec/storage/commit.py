"""Atomic directory commits: files first, ``_manifest.json`` last, one writer at a time.

    with DirectoryWriter(uri, kind="interactions", schema_version=1) as w:
        w.write_table("part-00000.parquet", table)
        w.commit(meta={...})

Workers of a distributed job may write their own files into the directory while one process
holds the writer: each calls ``write_shard`` and the holder lists the returned entries with
``adopt`` before it commits, so the manifest still appears last and only once.

Opening the writer removes an existing manifest first (a re-run makes the old version invisible
before touching it) and takes a lock file so a second writer on the same URI refuses instead of
interleaving. Leaving the block with an exception removes what this writer wrote and no manifest
appears. File names are chosen by the caller deterministically, so re-running is idempotent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import socket
import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from distrec.storage.manifest import MANIFEST, DataError, FileEntry, Manifest, check_relative_path
from distrec.storage.uri import filesystem, join

__all__ = ["DirectoryWriter", "LOCK", "table_to_parquet_bytes", "write_shard"]

LOCK = "_writing.lock"
log = logging.getLogger(__name__)


def table_to_parquet_bytes(table: pa.Table, *, row_group_size: int | None = None) -> bytes:
    """Parquet with a CRC per page, so readers of single row groups (ranged reads, no whole-file
    sha256) still detect corrupt bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, compression="snappy", write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def _put(fs, root: str, uri: str, path: str, data: bytes, *, rows: int) -> FileEntry:
    check_relative_path(path, where=uri)
    full = f"{root}/{path}"
    if "/" in path:
        fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(full, data)
    return FileEntry(path=path, rows=int(rows), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def write_shard(uri: str, path: str, table: pa.Table, *, row_group_size: int | None = None) -> FileEntry:
    """Write one Parquet file into ``uri`` from a process that does not hold its writer (a worker
    writing its own shard); the holder lists the returned entry with ``DirectoryWriter.adopt``."""
    fs, root = filesystem(uri.rstrip("/"))
    return _put(fs, root, uri, path, table_to_parquet_bytes(table, row_group_size=row_group_size), rows=table.num_rows)


class DirectoryWriter:
    """Writes files into ``uri`` and makes them visible together by writing the manifest last."""

    def __init__(self, uri: str, *, kind: str, schema_version: int) -> None:
        self.uri = uri.rstrip("/")
        self.kind = kind
        self.schema_version = schema_version
        self.fs, self.root = filesystem(self.uri)
        self.entries: dict[str, FileEntry] = {}
        self._token = uuid.uuid4().hex
        self._created_dir = False
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "DirectoryWriter":
        self.begin()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._open:
            self.abort()

    def begin(self) -> None:
        self._created_dir = not self.fs.exists(self.root)
        self.fs.makedirs(self.root, exist_ok=True)
        self._take_lock()
        manifest = f"{self.root}/{MANIFEST}"
        if self.fs.exists(manifest):
            log.info("replacing the existing contents of %s", self.uri)
            self.fs.rm(manifest)
        self._open = True

    def commit(self, meta: dict[str, Any] | None = None) -> Manifest:
        """Write the manifest (last), drop files of an earlier version it no longer lists, unlock."""
        from distrec import __version__

        manifest = Manifest(
            kind=self.kind,
            schema_version=self.schema_version,
            files=sorted(self.entries.values(), key=lambda e: e.path),
            meta=meta or {},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            writer=f"distrec {__version__}",
        )
        self._check_lock()
        self.fs.pipe_file(f"{self.root}/{MANIFEST}", manifest.to_json().encode())
        for stale in self._files_on_disk() - set(self.entries) - {LOCK, MANIFEST}:
            self.fs.rm(f"{self.root}/{stale}")
        self._release_lock()
        self._open = False
        return manifest

    def abort(self) -> None:
        """Remove what this writer wrote; no manifest is written."""
        for path in self.entries:
            try:
                self.fs.rm(f"{self.root}/{path}")
            except FileNotFoundError:
                pass
        self.entries.clear()
        self._release_lock()
        if self._created_dir and not self._files_on_disk():
            try:
                self.fs.rm(self.root, recursive=True)
            except FileNotFoundError:
                pass
        self._open = False

    # -- writing ---------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes, *, rows: int) -> FileEntry:
        if not self._open:
            raise RuntimeError("DirectoryWriter.write_* called outside begin()/commit()")
        entry = _put(self.fs, self.root, self.uri, path, data, rows=rows)
        self.entries[path] = entry
        return entry

    def adopt(self, entries: Iterable[FileEntry]) -> None:
        """List files that other processes wrote with ``write_shard``; an abort removes them too."""
        if not self._open:
            raise RuntimeError("DirectoryWriter.adopt called outside begin()/commit()")
        for entry in entries:
            check_relative_path(entry.path, where=self.uri)
            try:
                size = self.fs.size(f"{self.root}/{entry.path}")
            except FileNotFoundError:
                raise DataError(f"{join(self.uri, entry.path)}: a worker reported writing it, but it is missing") from None
            if size != entry.bytes:
                raise DataError(f"{join(self.uri, entry.path)}: {size} bytes, the worker that wrote it reported {entry.bytes}")
            self.entries[entry.path] = entry

    def write_table(self, path: str, table: pa.Table, *, row_group_size: int | None = None) -> FileEntry:
        data = table_to_parquet_bytes(table, row_group_size=row_group_size)
        return self.write_bytes(path, data, rows=table.num_rows)

    def write_json(self, path: str, obj: Any) -> FileEntry:
        return self.write_bytes(path, json.dumps(obj, indent=1).encode(), rows=0)

    # -- lock ------------------------------------------------------------------------------
    def _lock_path(self) -> str:
        return f"{self.root}/{LOCK}"

    def _take_lock(self) -> None:
        path = self._lock_path()
        if self.fs.exists(path):
            holder = self._read_lock()
            if holder and not _is_stale(holder):
                raise DataError(
                    f"{join(self.uri, LOCK)}: another writer (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"since {holder.get('started')}) is writing this directory; wait for it to finish or "
                    f"write to another URI. If no such writer is running, delete the lock file."
                )
            log.warning("taking over the stale lock of %s (its writer is gone)", self.uri)
        info = {
            "token": self._token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.fs.pipe_file(path, json.dumps(info).encode())

    def _read_lock(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._lock_path()))
        except (FileNotFoundError, ValueError):
            return None

    def _check_lock(self) -> None:
        holder = self._read_lock()
        if not holder or holder.get("token") != self._token:
            raise DataError(f"{join(self.uri, LOCK)}: this writer lost its lock to another writer; not committing")

    def _release_lock(self) -> None:
        holder = self._read_lock()
        if holder and holder.get("token") == self._token:
            self.fs.rm(self._lock_path())

    def _files_on_disk(self) -> set[str]:
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        prefix = self.root.rstrip("/") + "/"
        return {p[len(prefix):] for p in found if p.startswith(prefix)}


def _is_stale(holder: dict[str, Any]) -> bool:
    """A lock is stale when its writer ran on this host and that process no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False
