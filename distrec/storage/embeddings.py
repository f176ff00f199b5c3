"""Embedding tables on storage: ``part-NNNNN.parquet`` with ``index`` (int64), ``raw`` (the
dataset's id, when the table is keyed by users or items), ``vector`` (fixed-size list of
float32) and optional per-row scalars (``bias``), plus a manifest of kind ``embeddings``.

Parts are written in row groups of ``ROW_GROUP_ROWS`` rows (recorded in the manifest as
``row_group_rows``). A row group is the unit of distribution: ``EmbeddingShards.read`` gives
worker ``rank`` of ``world`` the row groups ``rank, rank + world, ...`` by ranged reads, so even
a table of a few thousand rows splits across workers and no worker fetches another's rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from distrec.errors import DataError
from distrec.storage.commit import DirectoryWriter
from distrec.storage.reader import StoredDirectory, Verify

__all__ = [
    "EMBEDDINGS",
    "ROW_GROUP_ROWS",
    "EmbeddingShards",
    "EmbeddingTable",
    "embedding_part",
    "read_embeddings",
    "sorted_rows",
    "write_embeddings",
]

EMBEDDINGS = "embeddings"
SCHEMA_VERSION = 1
ROW_GROUP_ROWS = 2048


@dataclass
class EmbeddingTable:
    index: np.ndarray  # int64 [N]
    vector: np.ndarray  # float32 [N, dim]
    columns: dict[str, np.ndarray]  # per-row extras, e.g. "bias" float32 [N]
    raw: np.ndarray | None
    meta: dict[str, Any]


def embedding_part(index: np.ndarray, vector: np.ndarray, *, raw: np.ndarray | None = None, **columns: np.ndarray) -> pa.Table:
    """One shard's table: ``vector`` [N, dim] becomes a fixed-size list column."""
    dim = vector.shape[1]
    data: dict[str, pa.Array] = {"index": pa.array(index.astype(np.int64))}
    if raw is not None:
        data["raw"] = pa.array(raw)
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vector, dtype=np.float32).ravel()), dim)
    for name, values in columns.items():
        data[name] = pa.array(values)
    return pa.table(data)


def write_embeddings(uri: str, table: EmbeddingTable, *, rows_per_part: int = 1 << 18) -> None:
    """Write a whole in-memory table (the distributed exporter writes block by block instead)."""
    with DirectoryWriter(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION) as w:
        for k, start in enumerate(range(0, max(len(table.index), 1), rows_per_part)):
            sl = slice(start, start + rows_per_part)
            raw = table.raw[sl] if table.raw is not None else None
            part = embedding_part(table.index[sl], table.vector[sl], raw=raw, **{n: c[sl] for n, c in table.columns.items()})
            w.write_table(f"part-{k:05d}.parquet", part, row_group_size=ROW_GROUP_ROWS)
        w.commit(
            {**table.meta, "rows": int(len(table.index)), "dim": int(table.vector.shape[1]), "row_group_rows": ROW_GROUP_ROWS}
        )


def read_embeddings(uri: str, *, verify: Verify = "size") -> EmbeddingTable:
    """A whole table, rows in index order (every shard checked against its sha256)."""
    store = StoredDirectory(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION, verify=verify)
    parts = [store.read_table(p) for p in store.manifest.paths("part-")]
    if not parts:
        raise DataError(f"{uri}: the embedding table has no parts")
    return _from_arrow(pa.concat_tables(parts), store.meta)


class EmbeddingShards:
    """An embedding table opened for per-worker streaming reads (checked on open, see ``verify``)."""

    def __init__(self, uri: str, *, verify: Verify = "size") -> None:
        self.uri = uri
        self.store = StoredDirectory(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION, verify=verify)
        self.meta = self.store.meta
        self.dim = int(self.meta["dim"])

    def row_groups(self) -> list[tuple[str, int]]:
        """Every (part, row group) in manifest order. Tables written before ``row_group_rows`` was
        recorded hold one row group per part."""
        size = self.meta.get("row_group_rows")
        units = []
        for part in self.store.manifest.paths("part-"):
            rows = self.store.entry(part).rows
            units += [(part, g) for g in range(math.ceil(rows / int(size)) if size else 1)]
        return units

    def read(self, *, rank: int = 0, world: int = 1) -> EmbeddingTable:
        """This worker's rows (row groups ``rank::world``, by ranged reads), in index order."""
        by_part: dict[str, list[int]] = {}
        for part, group in self.row_groups()[rank::world]:
            by_part.setdefault(part, []).append(group)
        tables = [self.store.read_row_groups(part, groups) for part, groups in by_part.items()]
        if not tables:
            empty = np.zeros(0, np.int64)
            return EmbeddingTable(index=empty, vector=np.zeros((0, self.dim), np.float32), columns={}, raw=None, meta=self.meta)
        return _from_arrow(pa.concat_tables(tables), self.meta)


def sorted_rows(
    table: pa.Table, *, column: str, width: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """A shard table's rows in index order: ``index`` [N], the fixed-size list ``column`` as
    [N, width], the other per-row columns (``bias``, ...), and the ``raw`` ids if present."""
    flat = table.column(column).combine_chunks().flatten().to_numpy()
    index = table.column("index").to_numpy()
    order = np.argsort(index, kind="stable")
    extras = [c for c in table.column_names if c not in ("index", "raw", column)]
    raw = table.column("raw").to_numpy(zero_copy_only=False)[order] if "raw" in table.column_names else None
    return index[order], flat.reshape(-1, width)[order], {c: table.column(c).to_numpy()[order] for c in extras}, raw


def _from_arrow(table: pa.Table, meta: dict[str, Any]) -> EmbeddingTable:
    index, vector, columns, raw = sorted_rows(table, column="vector", width=int(meta["dim"]))
    return EmbeddingTable(index=index, vector=vector, columns=columns, raw=raw, meta=meta)
