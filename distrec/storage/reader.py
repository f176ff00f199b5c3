"""Reading a committed directory: only what its manifest lists, each file checked on read.

Opening checks that the manifest exists, has the expected kind and schema version, and that
every listed file is present with its recorded size (``verify="size"``, cheap) or content hash
(``verify="sha256"``, reads everything). Every later ``read_bytes`` checks size and sha256 of the
bytes it returns, so a shard that changed after the check is still caught before it is parsed.
A store that keeps failing ends in a DataError naming the file (failures.py), never in a
"corrupt" verdict on a file that merely could not be fetched. Files are found in the manifest's
commit folder (manifest.py); errors name that location.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from distrec.errors import DataError
from distrec.storage.commit import LOCK
from distrec.storage.failures import storage_errors
from distrec.storage.manifest import MANIFEST, FileEntry, Manifest
from distrec.storage.uri import filesystem, join

__all__ = ["StoredDirectory", "Verify"]

Verify = Literal["none", "size", "sha256"]


class StoredDirectory:
    """A committed directory of files (dataset, embedding table, codes) opened for reading."""

    def __init__(
        self,
        uri: str,
        *,
        kind: str | Sequence[str] | None = None,
        schema_version: int | None = None,
        verify: Verify = "size",
    ) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem(self.uri)
        self.manifest = self._load_manifest()
        self.files_root = f"{self.root}/{self.manifest.folder}" if self.manifest.folder else self.root
        kinds = [kind] if isinstance(kind, str) else list(kind or [])
        if kinds and self.manifest.kind not in kinds:
            raise DataError(f"{self.uri}: holds {self.manifest.kind!r} data, expected {' or '.join(kinds)}")
        if schema_version is not None and self.manifest.schema_version != schema_version:
            raise DataError(
                f"{join(self.uri, MANIFEST)}: schema version {self.manifest.schema_version}, this distrec reads "
                f"version {schema_version}; re-create it with this version's jobs"
            )
        if verify != "none":
            self.verify(full=verify == "sha256")

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest.meta

    def location(self, path: str) -> str:
        """The URI of a listed file (inside the manifest's commit folder)."""
        return join(self.uri, self.manifest.folder, path)  # posixpath.join skips an empty folder

    def _load_manifest(self) -> Manifest:
        path = f"{self.root}/{MANIFEST}"
        with storage_errors(join(self.uri, MANIFEST), "read"):
            try:
                text = self.fs.cat_file(path).decode()
            except FileNotFoundError:
                if not self.fs.exists(self.root):
                    raise DataError(f"{self.uri}: no such directory") from None
                writing = self.fs.exists(f"{self.root}/{LOCK}")
                why = (
                    "a writer is still writing it, or was killed before it finished"
                    if writing
                    else "it is incomplete or was never committed"
                )
                raise DataError(
                    f"{self.uri}: no {MANIFEST}, so it is not a committed distrec directory ({why}); "
                    "re-run the job that writes it"
                ) from None
            except UnicodeDecodeError:
                raise DataError(f"{join(self.uri, MANIFEST)}: not UTF-8 JSON") from None
        return Manifest.from_json(text, where=join(self.uri, MANIFEST))

    def verify(self, *, full: bool = False) -> None:
        """Check every listed file exists with its recorded size (and sha256 when ``full``)."""
        for entry in self.manifest.files:
            if full:
                self.read_bytes(entry.path)
                continue
            with storage_errors(self.location(entry.path), "read the size of"):
                try:
                    size = self.fs.size(f"{self.files_root}/{entry.path}")
                except FileNotFoundError:
                    raise DataError(f"{self.location(entry.path)}: listed in the manifest but missing") from None
            if size != entry.bytes:
                raise DataError(
                    f"{self.location(entry.path)}: {size} bytes, the manifest says {entry.bytes}; "
                    "the file was truncated or changed after it was written"
                )

    def entry(self, path: str) -> FileEntry:
        try:
            return self.manifest.entry(path)
        except KeyError:
            raise DataError(f"{self.uri}: the manifest lists no file {path!r}") from None

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes, after checking their size and sha256 against the manifest."""
        entry = self.entry(path)
        with storage_errors(self.location(path), "read"):
            try:
                data = self.fs.cat_file(f"{self.files_root}/{path}")
            except FileNotFoundError:
                raise DataError(f"{self.location(path)}: listed in the manifest but missing") from None
        if len(data) != entry.bytes:
            raise DataError(
                f"{self.location(path)}: {len(data)} bytes, the manifest says {entry.bytes}; "
                "the file was truncated or changed after it was written"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise DataError(
                f"{self.location(path)}: sha256 {digest[:12]}… does not match the manifest's "
                f"{entry.sha256[:12]}…; the file is corrupt or changed after it was written"
            )
        return data

    def parquet(self, path: str) -> pq.ParquetFile:
        """The whole file, checked against its sha256, opened as Parquet."""
        data = self.read_bytes(path)
        try:
            return pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.location(path)}: not a readable Parquet file ({e})") from None

    def read_row_groups(self, path: str, groups: Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """Some row groups (``columns``, or all) of a Parquet file by ranged reads (only their bytes travel).

        The whole-file sha256 cannot be checked on part of a file; the size is checked against the
        manifest and every page against the CRC written with it."""
        with self._ranged_parquet(path) as pf:
            return pf.read_row_groups(list(groups), columns=list(columns) if columns is not None else None)

    def column_ranges(self, path: str, columns: Sequence[str]) -> dict[str, tuple[Any, Any] | None]:
        """Each column's smallest and largest value (None for a file without rows), from the
        row-group statistics in the Parquet footer: only the footer is read. Every distrec
        writer records them; a file without them is refused."""
        with self._ranged_parquet(path) as pf:
            meta = pf.metadata
            names = meta.schema.names
            out: dict[str, tuple[Any, Any] | None] = {}
            for column in columns:
                if column not in names:
                    raise DataError(f"{join(self.uri, path)}: no column {column!r}")
                stats = [meta.row_group(g).column(names.index(column)).statistics for g in range(meta.num_row_groups)]
                stats = [s for s in stats if s is None or s.num_values]
                if any(s is None or not s.has_min_max for s in stats):
                    raise DataError(f"{join(self.uri, path)}: column {column!r} has no min/max statistics; write it again")
                out[column] = (min(s.min for s in stats), max(s.max for s in stats)) if stats else None
            return out

    @contextmanager
    def _ranged_parquet(self, path: str) -> Iterator[pq.ParquetFile]:
        """The file opened for ranged reads, its size checked against the manifest; Parquet
        errors while it is open become DataErrors naming it."""
        entry = self.entry(path)
        full = self.location(path)
        with storage_errors(full, "open"):
            try:
                f = self.fs.open(f"{self.files_root}/{path}", "rb", block_size=1 << 22)
            except FileNotFoundError:
                raise DataError(f"{full}: listed in the manifest but missing") from None
        with f:
            if f.size != entry.bytes:
                raise DataError(f"{full}: {f.size} bytes, the manifest says {entry.bytes}; the file changed after it was written")
            try:  # the store's failures are DataErrors by now (_StoreReads); what is left is the file's fault
                yield pq.ParquetFile(_StoreReads(f, full), page_checksum_verification=True)
            except DataError:
                raise
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{full}: corrupt or unreadable Parquet ({e})") from None

    def read_table(self, path: str, columns: Sequence[str] | None = None) -> pa.Table:
        try:
            return self.parquet(path).read(columns=list(columns) if columns is not None else None)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.location(path)}: cannot read columns {columns}: {e}") from None

    def read_json(self, path: str) -> Any:
        try:
            return json.load(io.BytesIO(self.read_bytes(path)))
        except ValueError as e:
            raise DataError(f"{self.location(path)}: not valid JSON ({e})") from None


class _StoreReads(io.RawIOBase):
    """A file from the store whose failed reads raise DataErrors naming it, so that pyarrow's own
    OSErrors (a failed page CRC, a truncated footer) are not mistaken for a store's outage."""

    def __init__(self, f: Any, uri: str) -> None:
        self.f, self.uri = f, uri

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def read(self, size: int = -1) -> bytes:
        with storage_errors(self.uri, "read"):
            return self.f.read(size)
