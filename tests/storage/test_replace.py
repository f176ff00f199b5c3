"""Replacing a committed directory: the old version stays whole until the new manifest replaces
it in one step, a writer deletes only what an earlier distrec commit listed (plus its own
``commit-*`` folders), and a directory of someone else's files is refused unless ``overwrite``.
On local disk, memory:// and S3 (moto over HTTP).
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from distrec.errors import DataError
from distrec.storage import MANIFEST, DirectoryWriter, StoredDirectory, filesystem
from distrec.storage.commit import LOCK


def write_dir(uri: str, n_parts: int, *, seed: int = 0, overwrite: bool = False) -> dict[str, str]:
    """Commit ``n_parts`` shards and an id map; returns what the manifest lists (path → sha256)."""
    with DirectoryWriter(uri, kind="test", schema_version=1, overwrite=overwrite) as w:
        for i in range(n_parts):
            w.write_table(f"part-{i:05d}.parquet", pa.table({"x": [seed * 1000 + i * 10 + k for k in range(10)]}))
        w.write_table("ids/user.parquet", pa.table({"raw": [seed, seed + 1]}))
        manifest = w.commit({"n": n_parts, "seed": seed})
    return {f.path: f.sha256 for f in manifest.files}


def objects(uri: str) -> dict[str, bytes]:
    """Every file under ``uri`` (relative path → bytes)."""
    fs, root = filesystem(uri)
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return {}
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in found}


def read_whole(uri: str) -> tuple[dict, dict[str, str]]:
    """Open with every byte checked against its sha256, read every table; (meta, path → sha256)."""
    d = StoredDirectory(uri, kind="test", verify="sha256")
    for f in d.manifest.files:
        d.read_table(f.path)
    return d.meta, {f.path: f.sha256 for f in d.manifest.files}


def put(uri: str, path: str, data: bytes) -> None:
    fs, root = filesystem(uri)
    fs.makedirs(f"{root}/{path}".rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(f"{root}/{path}", data)


def test_a_reader_sees_the_old_version_until_the_new_manifest_replaces_it(uri):
    old = write_dir(uri, 3, seed=0)
    w = DirectoryWriter(uri, kind="test", schema_version=1)
    w.begin()
    w.write_table("part-00000.parquet", pa.table({"x": [7]}))  # same name as an old shard, other bytes
    assert read_whole(uri) == ({"n": 3, "seed": 0}, old)  # mid-write: the old version, whole
    w.commit({"n": 1})
    meta, files = read_whole(uri)
    assert (
        meta == {"n": 1} and list(files) == ["part-00000.parquet"] and files != {"part-00000.parquet": old["part-00000.parquet"]}
    )
    folder = StoredDirectory(uri).manifest.folder
    assert set(objects(uri)) == {MANIFEST, f"{folder}/part-00000.parquet"}  # the old files, the lock: gone


def test_a_failed_rewrite_leaves_the_old_version_byte_for_byte(uri):
    write_dir(uri, 3, seed=0)
    before = objects(uri)
    with pytest.raises(RuntimeError, match="parser failed"):
        with DirectoryWriter(uri, kind="test", schema_version=1) as w:
            w.write_table("part-00000.parquet", pa.table({"x": [7]}))
            w.write_table("part-00001.parquet", pa.table({"x": [8]}))
            raise RuntimeError("parser failed")
    assert objects(uri) == before
    assert read_whole(uri)[0] == {"n": 3, "seed": 0}


def test_a_writer_deletes_only_what_an_earlier_commit_listed(uri):
    write_dir(uri, 3, seed=0)
    theirs = {"notes.txt": b"x\n", "sub/thesis.tex": b"y\n", "part-00009.parquet": b"not listed", "commit-notes/a": b"z"}
    for path, data in theirs.items():
        put(uri, path, data)
    new = write_dir(uri, 1, seed=1)
    after = objects(uri)
    assert {p: after.get(p) for p in theirs} == theirs
    folder = StoredDirectory(uri).manifest.folder
    assert set(after) == set(theirs) | {MANIFEST} | {f"{folder}/{p}" for p in new}


def test_leftovers_of_an_unfinished_commit_are_removed_by_the_next_one(uri):
    write_dir(uri, 2, seed=0)
    put(uri, "commit-20240101T000000Z-0123456789ab/part-00000.parquet", b"a killed writer's shard")
    write_dir(uri, 1, seed=1)
    assert not [p for p in objects(uri) if p.startswith("commit-20240101T000000Z")]


def test_someone_elses_directory_is_refused_unless_overwrite(uri):
    theirs = {"notes.txt": b"x\n", "sub/thesis.tex": b"y\n", **{f"f{k}.csv": b"1,2\n" for k in range(5)}}
    for path, data in theirs.items():
        put(uri, path, data)
    with pytest.raises(DataError) as refused:
        DirectoryWriter(uri, kind="test", schema_version=1).begin()
    message = str(refused.value)
    assert message.startswith(f"{uri}: the directory is not empty and distrec did not write it")
    assert "f0.csv, f1.csv, f2.csv, f3.csv, f4.csv and 2 more" in message and "--overwrite" in message
    assert objects(uri) == theirs  # not even a lock
    new = write_dir(uri, 2, overwrite=True)
    after = objects(uri)
    assert {p: after[p] for p in theirs} == theirs and read_whole(uri)[1] == new
    write_dir(uri, 1, seed=1)  # now a distrec directory: no overwrite needed; their files stay
    assert {p: objects(uri)[p] for p in theirs} == theirs


def test_a_file_or_a_foreign_manifest_is_not_a_distrec_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file: is a file; a distrec output must be a directory"):
        write_dir(str(tmp_path / "file"), 1)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / MANIFEST).write_text('{"someone": "else"}')
    with pytest.raises(DataError, match=r"not empty and distrec did not write it .* it holds _manifest.json"):
        write_dir(str(tmp_path / "d"), 1)
    assert (tmp_path / "d" / MANIFEST).read_text() == '{"someone": "else"}'


def test_a_killed_writers_lock_marks_the_directory_as_distrecs(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / LOCK).write_text(json.dumps({"token": "x", "pid": 2**22 + 12345, "host": "elsewhere", "heartbeat": 0}))
    (d / "commit-20240101T000000Z-0123456789ab").mkdir()
    write_dir(str(d), 1)  # the stale lock is taken over; the dead writer's folder goes
    assert sorted(p.name for p in d.iterdir()) == [MANIFEST, StoredDirectory(str(d)).manifest.folder]


def test_a_directory_from_before_commit_folders_reads_and_is_replaced(tmp_path):
    """Manifests without ``folder`` list files beside them: still read, and a rewrite deletes
    exactly the files they list."""
    uri = str(tmp_path / "d")
    old = write_dir(uri, 2, seed=0)
    raw = json.loads((tmp_path / "d" / MANIFEST).read_text())
    for path in old:
        (tmp_path / "d" / path).parent.mkdir(exist_ok=True)
        shutil.move(tmp_path / "d" / raw["folder"] / path, tmp_path / "d" / path)
    (tmp_path / "d" / raw.pop("folder") / "ids").rmdir()
    (tmp_path / "d" / MANIFEST).write_text(json.dumps(raw))
    (tmp_path / "d" / "notes.txt").write_text("mine")
    assert read_whole(uri)[1] == old
    new = write_dir(uri, 1, seed=1)
    folder = StoredDirectory(uri).manifest.folder
    assert set(objects(uri)) == {MANIFEST, "notes.txt"} | {f"{folder}/{p}" for p in new}
    assert not (tmp_path / "d" / "ids").exists()


@pytest.mark.parametrize("folder", ["..", "../x", "a/b", "/abs", "s3://b/x"])
def test_a_manifest_folder_cannot_leave_the_directory(tmp_path, folder):
    uri = str(tmp_path / "d")
    write_dir(uri, 1)
    raw = json.loads((tmp_path / "d" / MANIFEST).read_text())
    (tmp_path / "d" / MANIFEST).write_text(json.dumps({**raw, "folder": folder}))
    with pytest.raises(DataError, match="not a (plain relative path|single folder name) inside the directory"):
        StoredDirectory(uri)


@pytest.mark.parametrize("landed", [False, True])
def test_a_manifest_write_that_fails_leaves_one_whole_version(uri, monkeypatch, landed):
    """The store fails the manifest's PUT, before it landed or after (its answer lost): readers
    find the old version or the new one, whole; the next commit clears what is left."""
    old = write_dir(uri, 2, seed=0)
    replace = DirectoryWriter._replace_manifest

    def fail(self, data):
        if landed:
            replace(self, data)
        raise OSError("connection reset")

    monkeypatch.setattr(DirectoryWriter, "_replace_manifest", fail)
    with pytest.raises(DataError, match="_manifest.json: cannot write"):
        write_dir(uri, 1, seed=1)
    monkeypatch.undo()
    meta, files = read_whole(uri)
    assert (meta["seed"], len(files)) == ((1, 2) if landed else (0, 3)) and (files == old) != landed
    new = write_dir(uri, 1, seed=2)
    assert set(objects(uri)) == {MANIFEST} | {f"{StoredDirectory(uri).manifest.folder}/{p}" for p in new}
