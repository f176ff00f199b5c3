"""A re-run over a good directory that dies part way (a real child process SIGKILLed at each step
of the commit, tests/faults.py) leaves the old version whole, or, once the new manifest is in
place, the new one whole: readers never find neither. The next run takes over the dead writer's
lock and removes its leftovers. For prepare (local and S3) and the embedding writer.
"""

from __future__ import annotations

import numpy as np
import pytest

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.storage import MANIFEST, DirectoryWriter, StoredDirectory, filesystem
from distrec.storage.commit import LOCK
from distrec.storage.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from distrec.storage.uri import join
from tests.faults import sigkill_after_writes, sigkill_on_call
from tests.helpers import tiny_synthetic

# tiny_synthetic writes 3 shards, then ids/item, ids/user and items.parquet, then the manifest
KILLS = {
    "after the first shard": {"writes": 1},
    "after every shard": {"writes": 3},
    "after every file": {"writes": 6},
    "before the manifest is replaced": {"method": "_replace_manifest"},
    "after the manifest is replaced": {"method": "_remove_previous"},
}


def _prepare(uri: str, seed: int) -> None:
    tiny_synthetic(uri, seed=seed)


def _kill(target: str, *args, when: dict) -> None:
    if "writes" in when:
        sigkill_after_writes(target, *args, writes=when["writes"])
    else:
        sigkill_on_call(target, *args, method=when["method"])


def whole_dataset(uri: str) -> dict[str, str]:
    """Open it with every byte checked, read every row of every split part; path → sha256."""
    dataset = InteractionDataset(uri, verify="sha256")
    rows = dataset.read(split=None, parts=("train", "val", "test"))
    assert len(rows) == dataset.meta["ratings"]
    return {f.path: f.sha256 for f in dataset.store.manifest.files}


def only_the_committed_files(uri: str) -> None:
    fs, root = filesystem(uri)
    folder = StoredDirectory(uri).manifest.folder
    listed = {f"{folder}/{f.path}" for f in StoredDirectory(uri).manifest.files}
    assert {p[len(root) + 1 :] for p in fs.find(root)} == {MANIFEST} | listed


@pytest.mark.parametrize("step", list(KILLS))
def test_a_reprepare_killed_at_any_step_leaves_a_whole_dataset(tmp_path, step):
    uri, fresh = str(tmp_path / "data"), str(tmp_path / "fresh")
    tiny_synthetic(uri, seed=0)
    old = whole_dataset(uri)
    tiny_synthetic(fresh, seed=1)
    new = whole_dataset(fresh)
    assert new != old
    _kill(f"{__name__}:_prepare", uri, 1, when=KILLS[step])
    assert (tmp_path / "data" / LOCK).exists()  # it really died mid-commit
    assert whole_dataset(uri) == (new if step == "after the manifest is replaced" else old)
    tiny_synthetic(uri, seed=1)  # the re-run takes over the lock and clears what the dead one left
    assert whole_dataset(uri) == new
    only_the_committed_files(uri)


def test_a_reprepare_killed_on_s3_leaves_the_old_dataset(s3_uri):
    uri = join(s3_uri, "data")
    tiny_synthetic(uri, seed=0)
    old = whole_dataset(uri)
    sigkill_after_writes(f"{__name__}:_prepare", uri, 1, writes=2)
    assert whole_dataset(uri) == old
    tiny_synthetic(uri, seed=1)
    assert whole_dataset(uri) != old
    only_the_committed_files(uri)


def _table(seed: int) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    return EmbeddingTable(
        index=np.arange(100), vector=rng.normal(size=(100, 4)).astype(np.float32), columns={}, raw=None, meta={"seed": seed}
    )


def _export(uri: str, seed: int) -> None:
    write_embeddings(uri, _table(seed), rows_per_part=25)


@pytest.mark.parametrize("step", ["after the first shard", "before the manifest is replaced"])
def test_an_embedding_export_killed_over_an_old_table_leaves_it_whole(tmp_path, step):
    uri = str(tmp_path / "emb")
    _export(uri, 0)
    _kill(f"{__name__}:_export", uri, 1, when=KILLS[step])
    got = read_embeddings(uri, verify="sha256")
    assert got.meta["seed"] == 0 and np.array_equal(got.vector, _table(0).vector)
    _export(uri, 1)
    assert np.array_equal(read_embeddings(uri, verify="sha256").vector, _table(1).vector)
    only_the_committed_files(uri)


def test_an_embedding_export_that_fails_leaves_the_old_table(tmp_path, monkeypatch):
    uri = str(tmp_path / "emb")
    _export(uri, 0)
    before = sorted(p for p in (tmp_path / "emb").rglob("*"))
    write_bytes = DirectoryWriter.write_bytes

    def fail_on_the_third(self, path, data, *, rows):
        if len(self.entries) == 2:
            raise DataError(f"{path}: cannot write (OSError: [Errno 28] No space left on device)")
        return write_bytes(self, path, data, rows=rows)

    monkeypatch.setattr(DirectoryWriter, "write_bytes", fail_on_the_third)
    with pytest.raises(DataError, match="No space left"):
        _export(uri, 1)
    assert sorted(p for p in (tmp_path / "emb").rglob("*")) == before
    assert np.array_equal(read_embeddings(uri, verify="sha256").vector, _table(0).vector)
