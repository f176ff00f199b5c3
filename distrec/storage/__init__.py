"""Storage: fsspec URIs, atomic directory commits (manifest last), verified reads."""

from distrec.storage.commit import DirectoryWriter
from distrec.storage.manifest import MANIFEST, FileEntry, Manifest
from distrec.storage.reader import StoredDirectory
from distrec.storage.uri import absolute, filesystem, is_local, join, read_text, write_text

__all__ = [
    "MANIFEST",
    "absolute",
    "DirectoryWriter",
    "FileEntry",
    "Manifest",
    "StoredDirectory",
    "filesystem",
    "is_local",
    "join",
    "read_text",
    "write_text",
]
