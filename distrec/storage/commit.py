"""Atomic directory commits: files first, ``_manifest.json`` last, one writer at a time.

    with DirectoryWriter(uri, kind="interactions", schema_version=1) as w:
        w.write_table("part-00000.parquet", table)
        w.commit(meta={...})

Workers of a distributed job may write their own files into the directory while one process
holds the writer: each calls ``write_shard`` and the holder lists the returned entries with
``adopt`` before it commits, so the manifest still appears last and only once.

Opening the writer takes a lock file (lock.py) so a second writer on the same URI refuses
instead of interleaving, then removes an existing manifest (a re-run makes the old version
invisible before touching it). Leaving the block with an exception removes what this writer
wrote and no manifest appears; a writer killed outright leaves files, its lock and no manifest,
which readers refuse and a re-run takes over. File names are chosen by the caller
deterministically, so re-running is idempotent. Storage failures surface as DataErrors naming
the file (failures.py).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from distrec.storage.failures import storage_errors
from distrec.storage.lock import WriterLock
from distrec.storage.manifest import MANIFEST, DataError, FileEntry, Manifest, check_relative_path
from distrec.storage.uri import filesystem, join

__all__ = ["DirectoryWriter", "LOCK", "table_to_parquet_bytes", "write_shard"]

LOCK = "_writing.lock"
log = logging.getLogger(__name__)


def table_to_parquet_bytes(
    table: pa.Table, *, row_group_size: int | None = None, dictionary: bool | list[str] = True
) -> bytes:
    """Parquet with a CRC per page, so readers of single row groups (ranged reads, no whole-file
    sha256) still detect corrupt bytes. ``dictionary``: the columns to dictionary-encode (all by
    default); leaving out columns with many distinct values per row group (user ids, times) saves
    the attempt Arrow abandons, which otherwise triples the write time of a rating shard."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, row_group_size=row_group_size, compression="snappy", write_page_checksum=True, use_dictionary=dictionary
    )
    return sink.getvalue().to_pybytes()


def _put(fs, root: str, uri: str, path: str, data: bytes, *, rows: int) -> FileEntry:
    check_relative_path(path, where=uri)
    full = f"{root}/{path}"
    with storage_errors(join(uri, path), "write"):
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
    """Writes files into ``uri`` and makes them visible together by writing the manifest last.

    ``wait_s``: how long to wait for another writer's lock to expire before refusing (0: refuse
    at once; a job re-run after its writer's host died waits out the lease)."""

    def __init__(self, uri: str, *, kind: str, schema_version: int, wait_s: float = 0.0) -> None:
        self.uri = uri.rstrip("/")
        self.kind = kind
        self.schema_version = schema_version
        self.wait_s = wait_s
        self.fs, self.root = filesystem(self.uri)
        self.entries: dict[str, FileEntry] = {}
        self.lock = WriterLock(join(self.uri, LOCK), what=f"{kind} writer")
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
        with storage_errors(self.uri, "create the directory"):
            self._created_dir = not self.fs.exists(self.root)
            self.fs.makedirs(self.root, exist_ok=True)
        self.lock.acquire(wait_s=self.wait_s)
        manifest = f"{self.root}/{MANIFEST}"
        with storage_errors(join(self.uri, MANIFEST), "remove the previous manifest"):
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
        self.lock.check()
        with storage_errors(join(self.uri, MANIFEST), "write"):
            self.fs.pipe_file(f"{self.root}/{MANIFEST}", manifest.to_json().encode())
        with storage_errors(self.uri, "remove files of the previous version"):
            for stale in self._files_on_disk() - set(self.entries) - {LOCK, MANIFEST}:
                self.fs.rm(f"{self.root}/{stale}")
        self.lock.release()
        self._open = False
        return manifest

    def abort(self) -> None:
        """Remove what this writer wrote; no manifest is written. Best effort: a store that is
        down leaves files behind (never a manifest), and the error that caused the abort stands."""
        self._open = False
        try:
            for path in self.entries:
                try:
                    self.fs.rm(f"{self.root}/{path}")
                except FileNotFoundError:
                    pass
            self.entries.clear()
            self.lock.release()
            if self._created_dir and not self._files_on_disk():
                try:
                    self.fs.rm(self.root, recursive=True)
                except FileNotFoundError:
                    pass
        except Exception as e:
            log.warning("%s: could not clean up after a failed write (%s); the directory has no manifest", self.uri, e)

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
            with storage_errors(join(self.uri, entry.path), "read the size of"):
                try:
                    size = self.fs.size(f"{self.root}/{entry.path}")
                except FileNotFoundError:
                    raise DataError(f"{join(self.uri, entry.path)}: a worker reported writing it, but it is missing") from None
            if size != entry.bytes:
                raise DataError(f"{join(self.uri, entry.path)}: {size} bytes, the worker that wrote it reported {entry.bytes}")
            self.entries[entry.path] = entry

    def write_table(
        self, path: str, table: pa.Table, *, row_group_size: int | None = None, dictionary: bool | list[str] = True
    ) -> FileEntry:
        data = table_to_parquet_bytes(table, row_group_size=row_group_size, dictionary=dictionary)
        return self.write_bytes(path, data, rows=table.num_rows)

    def write_json(self, path: str, obj: Any) -> FileEntry:
        return self.write_bytes(path, json.dumps(obj, indent=1).encode(), rows=0)

    def _files_on_disk(self) -> set[str]:
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        prefix = self.root.rstrip("/") + "/"
        return {p[len(prefix):] for p in found if p.startswith(prefix)}
