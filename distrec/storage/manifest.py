"""``_manifest.json``: the one file that makes a directory of shards exist.

A writer commits its files first and the manifest last, so a directory without a manifest is
incomplete by definition and is never read. The manifest lists every file with its row count,
size in bytes and sha256; readers trust nothing else in the directory. Each commit's files sit
in a folder of their own (``folder``, named by commit.py), so a new commit never touches the
files the current manifest lists; ``folder`` is empty in manifests written before that, whose
files sit beside the manifest.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from distrec.errors import DataError

__all__ = ["MANIFEST", "FileEntry", "Manifest", "check_relative_path"]

MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the directory, POSIX separators
    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    kind: str  # what the directory holds: "interactions", "embeddings", "codes", ...
    schema_version: int
    files: list[FileEntry]  # paths relative to ``folder``
    folder: str = ""  # the subfolder holding this commit's files ("" = beside the manifest)
    meta: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    writer: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            files = [FileEntry(**f) for f in raw["files"]]
            manifest = cls(
                kind=str(raw["kind"]),
                schema_version=int(raw["schema_version"]),
                files=files,
                folder=str(raw.get("folder", "")),
                meta=dict(raw.get("meta", {})),
                created=str(raw.get("created", "")),
                writer=str(raw.get("writer", "")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{where}: not a valid distrec manifest ({type(e).__name__}: {e})") from None
        for f in manifest.files:
            check_relative_path(f.path, where=where)
        if manifest.folder:
            check_relative_path(manifest.folder, where=where)
            if "/" in manifest.folder:
                raise DataError(f"{where}: folder {manifest.folder!r} is not a single folder name inside the directory")
        return manifest

    def entry(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def paths(self, prefix: str = "") -> list[str]:
        return [f.path for f in self.files if f.path.startswith(prefix)]


def check_relative_path(path: str, *, where: str) -> str:
    """Refuse paths that would leave the directory (absolute, ``..``, backslashes, schemes)."""
    norm = posixpath.normpath(path) if path else ""
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "://" in path
        or norm != path
        or norm == ".."
        or norm.startswith("../")
        or path == MANIFEST
    ):
        raise DataError(f"{where}: file path {path!r} is not a plain relative path inside the directory")
    return path
