"""Writers SIGKILLed between shards (a real child process, tests/faults.py) and concurrent writers
of one URI (a real second process): nothing half-written is ever read, a re-run completes the
directory idempotently, and the second writer refuses instead of interleaving.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.storage import MANIFEST, DirectoryWriter, StoredDirectory
from distrec.storage.commit import LOCK
from distrec.storage.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from tests.faults import REPO, python_env, sigkill_after_writes
from tests.helpers import tiny_synthetic

NOT_COMMITTED = r"no _manifest.json, so it is not a committed distrec directory \(a writer is still writing it, or was killed"


def _files(uri: str) -> dict[str, str]:
    return {f.path: f.sha256 for f in StoredDirectory(uri, verify="sha256").manifest.files}


def test_prepare_killed_between_shards_is_refused_then_rerun_completes(tmp_path):
    uri = str(tmp_path / "data")
    sigkill_after_writes("tests.helpers:tiny_synthetic", uri, writes=2)  # 2 of 4 shards written
    (killed,) = (tmp_path / "data").glob("commit-*/part-00000.parquet")  # the dead writer's commit folder
    assert (tmp_path / "data" / LOCK).exists() and not (tmp_path / "data" / MANIFEST).exists()
    with pytest.raises(DataError, match=NOT_COMMITTED):
        InteractionDataset(uri)
    tiny_synthetic(uri)  # the re-run takes over the dead writer's lock
    fresh = str(tmp_path / "fresh")
    tiny_synthetic(fresh)
    assert _files(uri) == _files(fresh)
    assert not (tmp_path / "data" / LOCK).exists()
    assert not killed.parent.exists()  # the commit removed the dead writer's folder


def _export(uri: str) -> None:
    rng = np.random.default_rng(0)
    table = EmbeddingTable(
        index=np.arange(100), vector=rng.normal(size=(100, 4)).astype(np.float32), columns={}, raw=None, meta={}
    )
    write_embeddings(uri, table, rows_per_part=25)


def test_embedding_export_killed_between_shards_is_refused_then_rerun_completes(tmp_path):
    uri = str(tmp_path / "emb")
    sigkill_after_writes(f"{__name__}:_export", uri, writes=3)
    with pytest.raises(DataError, match=NOT_COMMITTED):
        read_embeddings(uri)
    _export(uri)
    assert read_embeddings(uri).vector.shape == (100, 4)
    folder = StoredDirectory(uri).manifest.folder
    on_disk = sorted(str(p.relative_to(tmp_path / "emb")) for p in (tmp_path / "emb").rglob("*") if p.is_file())
    assert on_disk == [MANIFEST] + [f"{folder}/part-{k:05d}.parquet" for k in range(4)]  # the killed run's files are gone


def test_second_prepare_on_the_same_uri_refuses_while_the_first_writes(tmp_path):
    uri = str(tmp_path / "data")
    first = DirectoryWriter(uri, kind="interactions", schema_version=1)
    first.begin()  # a live writer in this process
    second = subprocess.run(
        [sys.executable, "jobs/prepare.py", "synthetic", "--out", uri, "--users", "50", "--items", "40", "--ratings", "500"],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr[-2000:]
    assert "another interactions writer (pid" in second.stderr and "is writing this directory" in second.stderr
    assert "Traceback" not in second.stderr
    first.abort()
    tiny_synthetic(uri, users=50, items=40, ratings=500)  # free again
    assert InteractionDataset(uri).meta["ratings"] == 500


def test_two_writers_racing_on_s3_one_wins(s3_uri):
    """The lock is an exclusive create on S3 too (If-None-Match: *): of two writers, exactly one gets it."""
    from distrec.storage.lock import WriterLock
    from distrec.storage.uri import join

    a, b = WriterLock(join(s3_uri, LOCK), what="a"), WriterLock(join(s3_uri, LOCK), what="b")
    assert a._create() is True
    assert b._create() is False
    a.acquire()  # our own record: taken
    with pytest.raises(DataError, match="another a .* is writing this directory"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()
