"""Per-worker reads of an embedding table: every row read by exactly one worker, in row groups
(so a table with fewer parts than workers still splits), sizes checked on open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distrec.errors import DataError
from distrec.storage.embeddings import ROW_GROUP_ROWS, EmbeddingShards, EmbeddingTable, write_embeddings
from tests.helpers import stored_file


def _table(rows: int) -> EmbeddingTable:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=(rows, 4)).astype(np.float32)
    return EmbeddingTable(
        index=np.arange(rows), vector=vector, columns={"bias": vector[:, 0].copy()}, raw=np.arange(rows) + 10, meta={}
    )


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_is_read_by_exactly_one_worker(tmp_path, world):
    rows = 2 * ROW_GROUP_ROWS + 100  # one part, three row groups
    source = _table(rows)
    write_embeddings(str(tmp_path / "t"), source, rows_per_part=rows)
    shards = EmbeddingShards(str(tmp_path / "t"))
    assert shards.row_groups() == [("part-00000.parquet", g) for g in range(3)]
    slices = [shards.read(rank=r, world=world) for r in range(world)]
    index = np.concatenate([s.index for s in slices])
    assert sorted(index.tolist()) == list(range(rows))
    for s in slices:
        assert np.array_equal(s.vector, source.vector[s.index]) and np.array_equal(s.raw, source.raw[s.index])
        assert np.array_equal(s.columns["bias"], source.columns["bias"][s.index])
    if world == 3:
        assert [len(s.index) for s in slices] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 100]


def test_a_worker_without_row_groups_gets_an_empty_slice_and_a_truncated_part_is_refused(tmp_path):
    write_embeddings(str(tmp_path / "t"), _table(10))
    empty = EmbeddingShards(str(tmp_path / "t")).read(rank=1, world=2)
    assert empty.vector.shape == (0, 4)
    part = Path(stored_file(str(tmp_path / "t"), "part-00000.parquet"))
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(DataError, match="part-00000.parquet"):
        EmbeddingShards(str(tmp_path / "t"))
