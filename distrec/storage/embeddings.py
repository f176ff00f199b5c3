"""Embedding tables on storage: ``part-NNNNN.parquet`` with ``index`` (int64), ``raw`` (the
dataset's id, when the table is keyed by users or items), ``vector`` (fixed-size list of
float32) and optional per-row scalars (``bias``), plus a manifest of kind ``embeddings``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from distrec.storage.commit import DirectoryWriter
from distrec.storage.manifest import DataError
from distrec.storage.reader import StoredDirectory, Verify

__all__ = ["EMBEDDINGS", "EmbeddingTable", "embedding_part", "read_embeddings", "write_embeddings"]

EMBEDDINGS = "embeddings"
SCHEMA_VERSION = 1


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
            w.write_table(f"part-{k:05d}.parquet", embedding_part(table.index[sl], table.vector[sl], raw=raw, **{n: c[sl] for n, c in table.columns.items()}))
        w.commit({**table.meta, "rows": int(len(table.index)), "dim": int(table.vector.shape[1])})


def read_embeddings(uri: str, *, verify: Verify = "size") -> EmbeddingTable:
    """A whole table, rows in index order."""
    store = StoredDirectory(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION, verify=verify)
    parts = [store.read_table(p) for p in store.manifest.paths("part-")]
    if not parts:
        raise DataError(f"{uri}: the embedding table has no parts")
    table = pa.concat_tables(parts)
    dim = int(store.meta["dim"])
    flat = table.column("vector").combine_chunks().flatten().to_numpy()
    index = table.column("index").to_numpy()
    order = np.argsort(index, kind="stable")
    extras = [c for c in table.column_names if c not in ("index", "raw", "vector")]
    return EmbeddingTable(
        index=index[order],
        vector=flat.reshape(-1, dim)[order],
        columns={c: table.column(c).to_numpy()[order] for c in extras},
        raw=table.column("raw").to_numpy(zero_copy_only=False)[order] if "raw" in table.column_names else None,
        meta=store.meta,
    )
