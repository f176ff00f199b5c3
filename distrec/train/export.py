"""Export of sharded embedding tables, block by block, to ``<output_dir>/embeddings/<table>/``.

For each block of rows every worker fills in the pieces it owns (zeros elsewhere) and a SUM
reduce to rank 0 assembles the block, which rank 0 writes as one Parquet shard. No worker ever
holds more than its own shards plus one block, whatever the table's size. ``export_rows`` is
that writer for any partition of the rows (TorchRec's shards here, ALS's ``id % world`` rows).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import InteractionDataset
from distrec.storage import DirectoryWriter, join
from distrec.storage.embeddings import (
    EMBEDDINGS,
    ROW_GROUP_ROWS,
    SCHEMA_VERSION,
    EmbeddingTable,
    embedding_part,
    write_embeddings,
)
from distrec.train.sharding import local_table_pieces

__all__ = ["export_tables", "export_rows", "export_vectors"]

ROWS_PER_PART = 1 << 18


def export_tables(dmp, model, *, output_dir: str, dataset: InteractionDataset, meta: dict) -> dict[str, str]:
    """Write each of ``model.export_groups`` (name → tables with the same rows, e.g. a factor and
    a bias table) as one embedding table; returns name → URI. Collective: all workers call it."""
    specs = {t.name: t for t in model.tables}
    uris = {}
    for name, tables in model.export_groups.items():
        pieces = {t: list(local_table_pieces(dmp, t)) for t in tables}

        def block(start: int, stop: int, name=name, tables=tables, pieces=pieces) -> dict[str, np.ndarray] | None:
            blocks = {t: _assemble(pieces[t], start, stop, specs[t].width) for t in tables}
            return model.export(name, blocks) if dist.get_rank() == 0 else None

        uris[name] = export_rows(name, block, rows=specs[tables[0]].rows, output_dir=output_dir, dataset=dataset, meta=meta)
    return uris


def export_rows(
    name: str,
    block: Callable[[int, int], dict[str, np.ndarray] | None],
    *,
    rows: int,
    output_dir: str,
    dataset: InteractionDataset,
    meta: dict,
    rows_per_part: int = ROWS_PER_PART,
) -> str:
    """Write the embedding table ``name`` of ``rows`` rows, one part per block of
    ``rows_per_part``: ``block(start, stop)`` is a collective that returns the rows' columns
    (``vector`` [n, dim], per-row scalars such as ``bias`` [n]) on rank 0, None elsewhere.
    Returns the table's URI. Collective: all workers call it."""
    uri = join(output_dir, EMBEDDINGS, name)
    rank = dist.get_rank()
    raw = _raw_ids(dataset, name) if rank == 0 else None
    writer = DirectoryWriter(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION) if rank == 0 else None
    if writer:
        writer.begin()
    try:
        dim = 0
        for k, start in enumerate(range(0, rows, rows_per_part)):
            stop = min(start + rows_per_part, rows)
            columns = block(start, stop)
            if writer:
                assert columns is not None
                vector = columns.pop("vector")
                dim = vector.shape[1]
                part = embedding_part(np.arange(start, stop), vector, raw=raw[start:stop] if raw is not None else None, **columns)
                writer.write_table(f"part-{k:05d}.parquet", part, row_group_size=ROW_GROUP_ROWS)
        if writer:
            writer.commit({**meta, "table": name, "rows": rows, "dim": dim, "row_group_rows": ROW_GROUP_ROWS})
    except BaseException:
        if writer:
            writer.abort()
        raise
    dist.barrier()
    return uri


def export_vectors(vectors: np.ndarray, *, name: str, output_dir: str, dataset: InteractionDataset, meta: dict) -> str:
    """Write vectors a model computed for every user or item (``vectors`` [rows, dim], the same
    on every worker, e.g. a tower's outputs) as the embedding table ``name``; returns its URI.
    Collective: rank 0 writes, the others wait."""
    uri = join(output_dir, EMBEDDINGS, name)
    if dist.get_rank() == 0:
        index = np.arange(len(vectors))
        table = EmbeddingTable(index=index, vector=vectors, columns={}, raw=_raw_ids(dataset, name), meta={**meta, "table": name})
        write_embeddings(uri, table, rows_per_part=ROWS_PER_PART)
    dist.barrier()
    return uri


def _assemble(pieces: list, start: int, stop: int, width: int) -> torch.Tensor:
    """Rows [start, stop) of a table on rank 0: each worker adds what it owns (SUM reduce)."""
    block = torch.zeros(stop - start, width)
    for row, col, tensor in pieces:
        lo, hi = max(row, start), min(row + tensor.shape[0], stop)
        if lo < hi:
            block[lo - start : hi - start, col : col + tensor.shape[1]] = tensor[lo - row : hi - row].detach()
    dist.reduce(block, dst=0)
    return block


def _raw_ids(dataset: InteractionDataset, table: str) -> np.ndarray | None:
    ids = dataset.read_table(f"ids/{table}.parquet") if table in ("user", "item") else None
    return ids.column("raw").to_numpy(zero_copy_only=False) if ids is not None else None
