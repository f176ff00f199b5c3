"""Directory commits and verified reads, on local disk, memory:// and S3 (moto over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from distrec.errors import DataError
from distrec.storage import MANIFEST, DirectoryWriter, StoredDirectory, filesystem
from distrec.storage.commit import LOCK
from tests.helpers import stored_file


def write_dir(uri: str, n_parts: int = 3, meta: dict | None = None):
    with DirectoryWriter(uri, kind="test", schema_version=1) as w:
        for i in range(n_parts):
            w.write_table(f"part-{i:05d}.parquet", pa.table({"x": list(range(i * 10, i * 10 + 10))}))
        w.write_table("ids/user.parquet", pa.table({"raw": [1, 2]}))
        return w.commit(meta or {"n": n_parts})


def test_round_trip(uri):
    manifest = write_dir(uri)
    d = StoredDirectory(uri, kind="test", schema_version=1, verify="sha256")
    assert d.meta == {"n": 3}
    assert [f.path for f in d.manifest.files] == [f.path for f in manifest.files]
    assert [f.path for f in manifest.files] == [
        "ids/user.parquet",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert d.read_table("part-00002.parquet").column("x").to_pylist() == list(range(20, 30))
    assert all(f.rows in (10, 2) and f.bytes > 0 and len(f.sha256) == 64 for f in d.manifest.files)
    fs, root = filesystem(uri)
    assert not fs.exists(f"{root}/{LOCK}")


def test_corrupted_shard_is_detected(uri):
    write_dir(uri)
    fs, path = filesystem(stored_file(uri, "part-00001.parquet"))
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    fs.pipe_file(path, bytes(data))
    d = StoredDirectory(uri, verify="size")  # sizes still agree
    with pytest.raises(DataError, match=r"part-00001.parquet: sha256 .* does not match"):
        d.read_table("part-00001.parquet")
    with pytest.raises(DataError, match="part-00001.parquet: sha256"):
        StoredDirectory(uri, verify="sha256")


def test_truncated_and_missing_shards(tmp_path):
    uri = str(tmp_path / "d")
    write_dir(uri)
    shard = Path(stored_file(uri, "part-00000.parquet"))
    shard.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="part-00000.parquet: 4 bytes, the manifest says"):
        StoredDirectory(uri)
    shard.unlink()
    with pytest.raises(DataError, match="part-00000.parquet: listed in the manifest but missing"):
        StoredDirectory(uri)


def test_no_manifest_means_not_committed(tmp_path):
    uri = str(tmp_path / "d")
    w = DirectoryWriter(uri, kind="test", schema_version=1)
    w.begin()
    w.write_table("part-00000.parquet", pa.table({"x": [1]}))
    # the writer is "killed" here: files but no manifest
    with pytest.raises(DataError, match="no _manifest.json.*still writing it, or was killed"):
        StoredDirectory(uri)
    with pytest.raises(DataError, match="no such directory"):
        StoredDirectory(str(tmp_path / "never"))


def test_error_inside_writer_leaves_nothing(tmp_path):
    uri = str(tmp_path / "d")
    with pytest.raises(RuntimeError):
        with DirectoryWriter(uri, kind="test", schema_version=1) as w:
            w.write_table("part-00000.parquet", pa.table({"x": [1]}))
            raise RuntimeError("parser failed")
    assert not (tmp_path / "d").exists()


def test_rewrite_replaces_old_version_and_drops_stale_files(tmp_path):
    uri = str(tmp_path / "d")
    write_dir(uri, n_parts=3)
    write_dir(uri, n_parts=1, meta={"n": 1})
    d = StoredDirectory(uri, verify="sha256")
    assert d.meta == {"n": 1}
    on_disk = {str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*") if p.is_file()}
    assert on_disk == {MANIFEST} | {f"{d.manifest.folder}/{f}" for f in ("part-00000.parquet", "ids/user.parquet")}


def test_second_writer_refuses_while_first_holds_lock(tmp_path):
    uri = str(tmp_path / "d")
    first = DirectoryWriter(uri, kind="test", schema_version=1)
    first.begin()
    with pytest.raises(DataError, match="another test writer .* is writing this directory"):
        DirectoryWriter(uri, kind="test", schema_version=1).begin()
    first.write_table("part-00000.parquet", pa.table({"x": [1]}))
    first.commit({})
    write_dir(uri)  # free again once committed


def test_stale_lock_of_dead_writer_is_taken_over(tmp_path):
    uri = str(tmp_path / "d")
    (tmp_path / "d").mkdir()
    import socket

    (tmp_path / "d" / LOCK).write_text(json.dumps({"token": "x", "pid": 2**22 + 12345, "host": socket.gethostname()}))
    write_dir(uri)
    assert StoredDirectory(uri).meta == {"n": 3}


def test_wrong_kind_and_schema_version(tmp_path):
    uri = str(tmp_path / "d")
    write_dir(uri)
    with pytest.raises(DataError, match="holds 'test' data, expected interactions"):
        StoredDirectory(uri, kind="interactions")
    with pytest.raises(DataError, match="schema version 1, this distrec reads version 2"):
        StoredDirectory(uri, schema_version=2)


@pytest.mark.parametrize("bad", ["../escape.parquet", "/etc/passwd", "a/../../b", "s3://other/x", "a\\b", ""])
def test_manifest_paths_cannot_leave_the_directory(tmp_path, bad):
    uri = str(tmp_path / "d")
    write_dir(uri)
    path = tmp_path / "d" / MANIFEST
    raw = json.loads(path.read_text())
    raw["files"][0]["path"] = bad
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="is not a plain relative path"):
        StoredDirectory(uri)


def test_garbage_manifest(tmp_path):
    uri = str(tmp_path / "d")
    write_dir(uri)
    (tmp_path / "d" / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not a valid distrec manifest"):
        StoredDirectory(uri)


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    import hashlib
    import pickle

    uri = str(tmp_path / "d")
    write_dir(uri)
    marker = tmp_path / "payload-ran"
    evil = pickle.dumps(_Payload(str(marker)))
    (tmp_path / "d" / "extra.pkl").write_bytes(evil)  # not listed: never read
    Path(stored_file(uri, "part-00000.parquet")).write_bytes(evil)  # listed, with a manifest that agrees
    path = tmp_path / "d" / MANIFEST
    raw = json.loads(path.read_text())
    entry = next(f for f in raw["files"] if f["path"] == "part-00000.parquet")
    entry.update(bytes=len(evil), sha256=hashlib.sha256(evil).hexdigest())
    path.write_text(json.dumps(raw))
    d = StoredDirectory(uri, verify="sha256")
    assert "extra.pkl" not in d.manifest.paths()
    with pytest.raises(DataError, match="part-00000.parquet: not a readable Parquet file"):
        d.read_table("part-00000.parquet")
    with pytest.raises(DataError, match="part-00000.parquet: corrupt or unreadable Parquet"):
        d.read_row_groups("part-00000.parquet", [0])
    assert not marker.exists()
