"""Export of sharded embedding tables, block by block, to ``<output_dir>/embeddings/<table>/``.

For each block of rows every worker fills in the pieces it owns (zeros elsewhere) and a SUM
reduce to rank 0 assembles the block, which rank 0 writes as one Parquet shard. No worker ever
holds more than its own shards plus one block, whatever the table's size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import InteractionDataset
from distrec.storage import DirectoryWriter, join
from distrec.storage.embeddings import EMBEDDINGS, SCHEMA_VERSION, embedding_part
from distrec.train.sharding import local_table_pieces

__all__ = ["export_tables"]

ROWS_PER_PART = 1 << 18


def export_tables(dmp, model, *, output_dir: str, dataset: InteractionDataset, meta: dict) -> dict[str, str]:
    """Write every table of ``model``; returns table name → URI. Collective: all workers call it."""
    rank = dist.get_rank()
    uris = {}
    for spec in model.tables:
        uri = join(output_dir, EMBEDDINGS, spec.name)
        uris[spec.name] = uri
        pieces = list(local_table_pieces(dmp, spec.name))
        raw = _raw_ids(dataset, spec.name) if rank == 0 else None
        writer = DirectoryWriter(uri, kind=EMBEDDINGS, schema_version=SCHEMA_VERSION) if rank == 0 else None
        if writer:
            writer.begin()
        try:
            for k, start in enumerate(range(0, spec.rows, ROWS_PER_PART)):
                stop = min(start + ROWS_PER_PART, spec.rows)
                block = torch.zeros(stop - start, spec.width)
                for row, col, tensor in pieces:
                    lo, hi = max(row, start), min(row + tensor.shape[0], stop)
                    if lo < hi:
                        block[lo - start : hi - start, col : col + tensor.shape[1]] = tensor[lo - row : hi - row].detach()
                dist.reduce(block, dst=0)
                if writer:
                    index = np.arange(start, stop)
                    columns = model.export(spec.name, block)
                    vector = columns.pop("vector")
                    part = embedding_part(index, vector, raw=raw[start:stop] if raw is not None else None, **columns)
                    writer.write_table(f"part-{k:05d}.parquet", part)
            if writer:
                writer.commit({**meta, "table": spec.name, "rows": spec.rows, "dim": int(vector.shape[1])})
        except BaseException:
            if writer:
                writer.abort()
            raise
    dist.barrier()
    return uris


def _raw_ids(dataset: InteractionDataset, table: str) -> np.ndarray | None:
    ids = dataset.read_table(f"ids/{table}.parquet") if table in ("user", "item") else None
    return ids.column("raw").to_numpy(zero_copy_only=False) if ids is not None else None
