"""Embedding tables shared by the TorchRec models: configs, deterministic init, id → KJT.

Initial values depend only on ``(seed, table, row)``, never on how the table is sharded, so a
run on 1 worker and on 4 workers, table-wise or column-wise, starts from the same weights, and
a test can compare a sharded model with its unsharded twin row for row.

TorchRec is imported where a table is built or looked up, not when this module loads: a job's
driver and each Tune trial load the model registry to validate a config, and TorchRec's import
(fbgemm's libraries) cost each of them 1.7 s.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

__all__ = ["TableSpec", "table_config", "embedding_collection", "kjt", "init_rows", "ids_to_kjt", "lookup", "gaussian_rows",
           "padded_width", "INIT_BLOCK"]  # fmt: skip

INIT_BLOCK = 4096  # rows drawn from one seeded generator


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: ``rows`` × ``width`` float32, looked up by the feature of the same name.

    ``init(gen, rows, width) -> Tensor[rows, width]`` draws a block's initial values.
    ``features``: the KJT features that look up this table (default: just ``name``)."""

    name: str
    rows: int
    width: int
    init: Callable[[torch.Generator, int, int], torch.Tensor]
    features: tuple[str, ...] = ()


def padded_width(width: int) -> int:
    """fbgemm's CPU kernels take row widths that are multiples of 4."""
    return -(-width // 4) * 4


def gaussian_rows(dim: int, std: float) -> Callable[[torch.Generator, int, int], torch.Tensor]:
    """A ``TableSpec.init``: the first ``dim`` columns N(0, std²), the padding columns 0."""

    def init(gen: torch.Generator, rows: int, width: int) -> torch.Tensor:
        values = torch.zeros(rows, width)
        values[:, :dim] = torch.randn(rows, dim, generator=gen) * std
        return values

    return init


def table_config(spec: TableSpec) -> EmbeddingBagConfig:
    from torchrec import EmbeddingBagConfig
    from torchrec.modules.embedding_configs import PoolingType

    if spec.width % 4:
        raise ValueError(f"table {spec.name}: width {spec.width} is not a multiple of 4 (see padded_width)")
    return EmbeddingBagConfig(
        name=spec.name,
        embedding_dim=spec.width,
        num_embeddings=spec.rows,
        feature_names=list(spec.features or (spec.name,)),
        pooling=PoolingType.SUM,
    )


def embedding_collection(specs: list[TableSpec], device: torch.device) -> EmbeddingBagCollection:
    """A model's tables as one unsharded collection (on ``meta`` until the planner shards it)."""
    from torchrec import EmbeddingBagCollection

    return EmbeddingBagCollection(tables=[table_config(t) for t in specs], device=device)


def kjt(keys: list[str], values: torch.Tensor, lengths: torch.Tensor) -> KeyedJaggedTensor:
    """The ids of ``keys`` (``lengths`` per key and bag, key-major) as TorchRec's input."""
    from torchrec import KeyedJaggedTensor

    return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths)


def init_rows(spec: TableSpec, seed: int, start: int, stop: int) -> torch.Tensor:
    """Initial values of rows ``[start, stop)`` (all columns), independent of sharding."""
    out = torch.empty(stop - start, spec.width)
    block = start // INIT_BLOCK
    while block * INIT_BLOCK < stop:
        lo, hi = block * INIT_BLOCK, min((block + 1) * INIT_BLOCK, spec.rows)
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{spec.name}/{block}".encode()))
        values = spec.init(gen, hi - lo, spec.width)
        a, b = max(lo, start), min(hi, stop)
        out[a - start : b - start] = values[a - lo : b - lo]
        block += 1
    return out


def ids_to_kjt(features: dict[str, torch.Tensor]) -> KeyedJaggedTensor:
    """One id per row for each feature (a bag of one): ``{"user": [B], "item": [B]}`` → KJT."""
    keys = list(features)
    values = torch.cat([features[k] for k in keys])
    lengths = torch.ones(values.numel(), dtype=torch.int32, device=values.device)
    return kjt(keys, values, lengths)


def lookup(sparse, keys: list[str], ids: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows of some features, ``ids`` feature → int64 [N_f] (any N_f, any subset of ``keys``),
    through an EmbeddingBagCollection (sharded or not): feature → float [N_f, width].

    A KJT has one bag count for all its keys, so each feature's ids fill the first bags and the
    rest stay empty; ``keys`` (every feature of the collection, always in the same order, as a
    sharded collection fixes its feature order at the first call) carries the absent ones as
    empty. Collective when ``sparse`` is sharded: every worker calls it in step."""
    bags = max(len(v) for v in ids.values())
    empty = torch.zeros(0, dtype=torch.int64)
    values = torch.cat([ids.get(k, empty) for k in keys])
    lengths = torch.zeros(len(keys), bags, dtype=torch.int32)
    for j, k in enumerate(keys):
        lengths[j, : len(ids.get(k, empty))] = 1
    pooled = sparse(kjt(keys, values, lengths.reshape(-1)))
    return {k: pooled[k][: len(v)] for k, v in ids.items()}
