"""Atomic directory commits: files first, ``_manifest.json`` last, one writer at a time, and the
previous version readable until the new one replaces it.

    with DirectoryWriter(uri, kind="interactions", schema_version=1) as w:
        w.write_table("part-00000.parquet", table)
        w.commit(meta={...})

Workers of a distributed job may write their own files into the directory while one process
holds the writer: each calls ``write_shard(writer.files_uri, ...)`` and the holder lists the
returned entries with ``adopt`` before it commits, so the manifest still appears last and once.

A commit's files go into a folder of its own, ``commit-<UTC time>-<12 hex>/``, under the names
the caller chose (deterministic, so a re-run writes the same content under the same names). The
manifest of the version being replaced, and every file it lists, stay untouched while the new
files are written; the new manifest then replaces the old in one step (locally a rename, on S3
a single PUT), so a reader finds the old version or the new one, never neither. Only after that
does the writer delete, and only this: the files the previous manifest listed, and other
``commit-*`` folders (an aborted or killed commit's files; only distrec gives folders those
names). Anything else in the directory is never deleted.

Opening the writer refuses a directory that is not empty but holds neither a distrec manifest
nor a distrec lock (someone's files, not a distrec output) unless ``overwrite`` is set; then it
takes a lock file (lock.py) so a second writer on the same URI refuses instead of interleaving.
Leaving the block with an exception removes this commit's folder; a writer killed outright leaves
its folder and its lock, which the next writer takes over, and the previous version stays
readable throughout. Storage failures surface as DataErrors naming the file (failures.py).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distrec.errors import DataError
from distrec.storage.failures import storage_errors
from distrec.storage.lock import WriterLock
from distrec.storage.manifest import MANIFEST, FileEntry, Manifest, check_relative_path
from distrec.storage.uri import filesystem, join

__all__ = ["DirectoryWriter", "LOCK", "check_target", "table_to_parquet_bytes", "write_shard"]

LOCK = "_writing.lock"
COMMIT_FOLDER = re.compile(r"commit-\d{8}T\d{6}Z-[0-9a-f]{12}")  # the only folders a writer deletes whole
log = logging.getLogger(__name__)


def table_to_parquet_bytes(table: pa.Table, *, row_group_size: int | None = None, dictionary: bool | list[str] = True) -> bytes:
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
        if "/" in path or getattr(fs, "local_file", False):  # a local commit folder is made by its first file
            fs.makedirs(posixpath.dirname(full), exist_ok=True)
        fs.pipe_file(full, data)
    return FileEntry(path=path, rows=int(rows), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def write_shard(files_uri: str, path: str, table: pa.Table, *, row_group_size: int | None = None) -> FileEntry:
    """Write one Parquet file from a process that does not hold the writer (a worker writing its
    own shard) into the writer's ``files_uri``; the holder lists the entry with ``adopt``."""
    fs, root = filesystem(files_uri.rstrip("/"))
    return _put(fs, root, files_uri, path, table_to_parquet_bytes(table, row_group_size=row_group_size), rows=table.num_rows)


def check_target(uri: str, *, overwrite: bool = False) -> None:
    """Refuse (DataError) to write into ``uri`` when it is a file, or a non-empty directory that
    holds neither a distrec manifest nor a distrec lock, naming a few of what it holds; with
    ``overwrite`` the directory is written anyway (its files stay; only distrec's are deleted)."""
    uri = uri.rstrip("/")
    fs, root = filesystem(uri)
    with storage_errors(uri, "list"):
        if not fs.exists(root):
            return
        if not fs.isdir(root):
            raise DataError(f"{uri}: is a file; a distrec output must be a directory")
        found = sorted(f"{_name(e['name'])}/" if e["type"] == "directory" else _name(e["name"]) for e in fs.ls(root, detail=True))
    if not found or overwrite or LOCK in found or (MANIFEST in found and _previous(fs, root, uri) is not None):
        return
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    raise DataError(
        f"{uri}: the directory is not empty and distrec did not write it (no {MANIFEST} or {LOCK}); it holds {shown}. "
        "A distrec writer deletes only files its own manifests listed, and writes only into an empty directory or "
        "one it wrote before: choose another directory, or write beside these files anyway (they are kept) "
        "with --overwrite (jobs/prepare.py) or overwrite=True"
    )


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _previous(fs, root: str, uri: str) -> Manifest | None:
    """The directory's committed manifest; None when there is none or it is not a distrec one."""
    with storage_errors(join(uri, MANIFEST), "read"):
        try:
            text = fs.cat_file(f"{root}/{MANIFEST}")
        except FileNotFoundError:
            return None
    try:
        return Manifest.from_json(text.decode(), where=join(uri, MANIFEST))
    except (DataError, UnicodeDecodeError):
        return None


def _new_folder() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"commit-{now}-{uuid.uuid4().hex[:12]}"


class DirectoryWriter:
    """Writes files into a new commit folder of ``uri`` and makes them visible together by
    replacing the manifest last.

    ``wait_s``: how long to wait for another writer's lock to expire before refusing (0: refuse
    at once; a job re-run after its writer's host died waits out the lease). ``overwrite``: write
    into a non-empty directory distrec did not write (see ``check_target``)."""

    def __init__(self, uri: str, *, kind: str, schema_version: int, wait_s: float = 0.0, overwrite: bool = False) -> None:
        self.uri = uri.rstrip("/")
        self.kind = kind
        self.schema_version = schema_version
        self.wait_s = wait_s
        self.overwrite = overwrite
        self.fs, self.root = filesystem(self.uri)
        self.entries: dict[str, FileEntry] = {}
        self.lock = WriterLock(join(self.uri, LOCK), what=f"{kind} writer")
        self.folder = ""  # this commit's folder, named by begin()
        self.previous: Manifest | None = None
        self._created_dir = False
        self._open = False
        self._replacing = False  # the new manifest may be in place: its folder must stay

    @property
    def files_uri(self) -> str:
        """Where this commit's files go (``write_shard`` from other processes writes here)."""
        return join(self.uri, self.folder)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> DirectoryWriter:
        self.begin()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._open:
            self.abort()

    def begin(self) -> None:
        check_target(self.uri, overwrite=self.overwrite)
        with storage_errors(self.uri, "create the directory"):
            self._created_dir = not self.fs.exists(self.root)
            self.fs.makedirs(self.root, exist_ok=True)
        self.lock.acquire(wait_s=self.wait_s)
        try:
            self.previous = _previous(self.fs, self.root, self.uri)  # stays readable until commit() replaces it
        except BaseException:
            self.lock.release()
            raise
        self.folder, self._replacing, self._open = _new_folder(), False, True

    def commit(self, meta: dict[str, Any] | None = None) -> Manifest:
        """Replace the manifest in one step (the new version appears, the old one goes), then
        delete the previous version's files and unlock."""
        from distrec import __version__

        manifest = Manifest(
            kind=self.kind,
            schema_version=self.schema_version,
            files=sorted(self.entries.values(), key=lambda e: e.path),
            folder=self.folder,
            meta=meta or {},
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            writer=f"distrec {__version__}",
        )
        self.lock.check()
        self._replacing = True
        with storage_errors(join(self.uri, MANIFEST), "write"):
            self._replace_manifest(manifest.to_json().encode())
        self._open = False  # committed: nothing from here on may remove the new version
        self._remove_previous()
        self.lock.release()
        return manifest

    def abort(self) -> None:
        """Remove this commit's folder (what this writer and the workers wrote); the previous
        version, if any, is untouched. Best effort: a store that is down leaves the folder behind
        (the next commit removes it), and the error that caused the abort stands. After a failed
        manifest write the folder stays: the write may have landed (a PUT whose answer was lost)."""
        self._open = False
        try:
            self.entries.clear()
            if not self._replacing:
                self._remove_tree(self.folder)
            self.lock.release()
            if self._created_dir and not self._files_on_disk():
                try:
                    self.fs.rm(self.root, recursive=True)
                except FileNotFoundError:
                    pass
        except Exception as e:
            log.warning("%s: could not clean up after a failed write (%s); the previous version is unchanged", self.uri, e)

    # -- writing ---------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes, *, rows: int) -> FileEntry:
        if not self._open:
            raise RuntimeError("DirectoryWriter.write_* called outside begin()/commit()")
        entry = _put(self.fs, f"{self.root}/{self.folder}", self.files_uri, path, data, rows=rows)
        self.entries[path] = entry
        return entry

    def adopt(self, entries: Iterable[FileEntry]) -> None:
        """List files that other processes wrote with ``write_shard``; an abort removes them too."""
        if not self._open:
            raise RuntimeError("DirectoryWriter.adopt called outside begin()/commit()")
        for entry in entries:
            check_relative_path(entry.path, where=self.uri)
            with storage_errors(join(self.files_uri, entry.path), "read the size of"):
                try:
                    size = self.fs.size(f"{self.root}/{self.folder}/{entry.path}")
                except FileNotFoundError:
                    raise DataError(
                        f"{join(self.files_uri, entry.path)}: a worker reported writing it, but it is missing"
                    ) from None
            if size != entry.bytes:
                raise DataError(
                    f"{join(self.files_uri, entry.path)}: {size} bytes, the worker that wrote it reported {entry.bytes}"
                )
            self.entries[entry.path] = entry

    def write_table(
        self, path: str, table: pa.Table, *, row_group_size: int | None = None, dictionary: bool | list[str] = True
    ) -> FileEntry:
        data = table_to_parquet_bytes(table, row_group_size=row_group_size, dictionary=dictionary)
        return self.write_bytes(path, data, rows=table.num_rows)

    def write_json(self, path: str, obj: Any) -> FileEntry:
        return self.write_bytes(path, json.dumps(obj, indent=1).encode(), rows=0)

    # -- internals -------------------------------------------------------------------------
    def _replace_manifest(self, data: bytes) -> None:
        """One step from the old manifest to the new: a rename on local disk (written first
        inside this commit's folder, so a kill leaves it where the next commit removes it), a
        single PUT on object stores."""
        target = f"{self.root}/{MANIFEST}"
        if getattr(self.fs, "local_file", False):
            aside = f"{self.root}/{self.folder}/{MANIFEST}"
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            with open(aside, "wb") as f:
                f.write(data)
            os.replace(aside, target)
        else:
            self.fs.pipe_file(target, data)

    def _remove_previous(self) -> None:
        """Delete the files the previous manifest listed, then every other commit folder (the
        previous one, and any an aborted or killed writer left). Best effort: the commit stands."""
        try:
            if self.previous is not None:
                for entry in self.previous.files:
                    self._remove_file(posixpath.join(self.previous.folder, entry.path))
            with storage_errors(self.uri, "list"):
                names = [_name(p) for p in self.fs.ls(self.root, detail=False)]
            for name in names:
                if COMMIT_FOLDER.fullmatch(name) and name != self.folder:
                    self._remove_tree(name)
        except Exception as e:
            log.warning(
                "%s: committed, but could not remove the previous version's files (%s); the next commit will", self.uri, e
            )

    def _remove_file(self, path: str) -> None:
        """Remove one file and, on local disk, the folders it leaves empty (``ids/``)."""
        with storage_errors(join(self.uri, path), "remove"):
            try:
                self.fs.rm(f"{self.root}/{path}")
            except FileNotFoundError:
                return
            parent = posixpath.dirname(path)
            while parent and getattr(self.fs, "local_file", False) and not os.listdir(f"{self.root}/{parent}"):
                os.rmdir(f"{self.root}/{parent}")
                parent = posixpath.dirname(parent)

    def _remove_tree(self, folder: str) -> None:
        with storage_errors(join(self.uri, folder), "remove"):
            try:
                self.fs.rm(f"{self.root}/{folder}", recursive=True)
            except FileNotFoundError:
                pass

    def _files_on_disk(self) -> set[str]:
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        prefix = self.root.rstrip("/") + "/"
        return {p[len(prefix) :] for p in found if p.startswith(prefix)}
