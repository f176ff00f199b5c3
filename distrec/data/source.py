"""Where a dataset's raw files come from: a directory, a zip or tar archive, or a URL.

``Source`` finds a file by its base name wherever it sits (``ml-100k/u.data`` inside the
official zip, or ``u.data`` in a directory the user unpacked), so parsers ask for upstream file
names and never care about the layout. URLs are fetched once through fsspec into a cache
directory (the official download path); ``--source`` points at files already on disk or in S3.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import fsspec

from distrec.errors import DataError
from distrec.storage.uri import filesystem

__all__ = ["Source", "download", "default_cache_dir"]

log = logging.getLogger(__name__)

_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError)


def default_cache_dir() -> str:
    return os.environ.get("DISTREC_CACHE", str(Path.home() / ".cache" / "distrec"))


def download(url: str, cache_dir: str) -> str:
    """Fetch ``url`` into ``cache_dir`` once (kept only when complete) and return the local path."""
    from distrec.console import progress_bar

    os.makedirs(cache_dir, exist_ok=True)
    target = os.path.join(cache_dir, posixpath.basename(url.split("?", 1)[0]))
    if os.path.exists(target):
        return target
    partial = target + ".partial"
    try:
        with fsspec.open(url, "rb") as src, open(partial, "wb") as dst:
            total = getattr(src, "size", None)
            with progress_bar(total=total, desc=f"download {posixpath.basename(target)}", unit="B") as bar:
                while block := src.read(1 << 22):
                    dst.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as e:
        if os.path.exists(partial):
            os.remove(partial)
        raise DataError(f"cannot download {url}: {e}. Download it by hand and pass its path with --source") from None
    os.replace(partial, target)
    return target


class _Guarded(io.RawIOBase):
    """A member stream whose archive errors (truncated download) become DataError naming the file."""

    def __init__(self, raw: BinaryIO, label: str) -> None:
        self._raw, self._label = raw, label

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            if hasattr(self._raw, "readinto"):  # straight into the caller's buffer: no extra copy
                return self._raw.readinto(buffer) or 0
            data = self._raw.read(len(buffer))
        except _ARCHIVE_ERRORS as e:
            raise DataError(f"{self._label}: archive is truncated or corrupt ({e})") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class Source:
    """A set of raw files, found by base name across directories and archives."""

    def __init__(self, locations: str | Iterable[str]) -> None:
        self.locations = [locations] if isinstance(locations, str) else list(locations)
        self._index: dict[str, tuple[str, str, str]] = {}  # base name -> (location, member, label)
        self._archives: dict[str, zipfile.ZipFile | tarfile.TarFile] = {}
        for loc in self.locations:
            try:
                self._scan(loc)
            except DataError:
                raise
            except (ValueError, ImportError, OSError) as e:  # unknown scheme, missing driver, no access
                raise DataError(f"{loc}: cannot read ({type(e).__name__}: {e})") from None

    def __repr__(self) -> str:
        return f"Source({', '.join(self.locations)})"

    def _scan(self, loc: str) -> None:
        fs, path = filesystem(loc)
        if not fs.exists(path):
            raise DataError(f"{loc}: no such file or directory")
        if fs.isdir(path):
            for member in sorted(fs.find(path)):
                label = loc.rstrip("/") + "/" + member[len(path) :].lstrip("/")
                self._index.setdefault(posixpath.basename(member), (loc, member, label))
            return
        lower = path.lower()
        if lower.endswith(".zip"):
            archive = self._open_archive(loc, fs, path, "zip")
            for name in archive.namelist():  # type: ignore[union-attr]
                if not name.endswith("/"):
                    self._index.setdefault(posixpath.basename(name), (loc, name, f"{loc}!{name}"))
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            archive = self._open_archive(loc, fs, path, "tar")
            for info in archive.getmembers():  # type: ignore[union-attr]
                if info.isfile():
                    self._index.setdefault(posixpath.basename(info.name), (loc, info.name, f"{loc}!{info.name}"))
        else:
            self._index.setdefault(posixpath.basename(path), (loc, path, loc))

    def _open_archive(self, loc: str, fs, path: str, kind: str):
        try:
            handle = fs.open(path, "rb")
            archive = zipfile.ZipFile(handle) if kind == "zip" else tarfile.open(fileobj=handle, mode="r:*")
        except _ARCHIVE_ERRORS as e:
            raise DataError(f"{loc}: not a readable {kind} archive (truncated or corrupt download?): {e}") from None
        self._archives[loc] = archive
        return archive

    def names(self) -> list[str]:
        return sorted(self._index)

    def has(self, name: str) -> bool:
        return name in self._index

    def label(self, name: str) -> str:
        """How error messages name the file: ``archive.zip!member`` or the path."""
        return self._lookup(name)[2]

    def _lookup(self, name: str) -> tuple[str, str, str]:
        try:
            return self._index[name]
        except KeyError:
            raise DataError(f"{self}: no file named {name!r} (found: {', '.join(self.names()[:20]) or 'nothing'})") from None

    def open(self, name: str) -> BinaryIO:
        """A binary stream over the file called ``name``."""
        loc, member, label = self._lookup(name)
        archive = self._archives.get(loc)
        try:
            if isinstance(archive, zipfile.ZipFile):
                raw = archive.open(member)
            elif isinstance(archive, tarfile.TarFile):
                raw = archive.extractfile(member)
                assert raw is not None
            else:
                fs, _ = filesystem(loc)
                raw = fs.open(member, "rb")
        except _ARCHIVE_ERRORS as e:
            raise DataError(f"{label}: archive is truncated or corrupt ({e})") from None
        except OSError as e:
            raise DataError(f"{label}: cannot open ({e})") from None
        return io.BufferedReader(_Guarded(raw, label), buffer_size=1 << 20)  # type: ignore[return-value]

    def size(self, name: str) -> int | None:
        loc, member, _ = self._lookup(name)
        archive = self._archives.get(loc)
        if isinstance(archive, zipfile.ZipFile):
            return archive.getinfo(member).file_size
        if isinstance(archive, tarfile.TarFile):
            return archive.getmember(member).size
        fs, _ = filesystem(loc)
        return fs.size(member)
