"""What a compressor worker trains on: its slice of an embedding table, minus the held-out rows,
in fixed-shape batches that keep every worker in lockstep.

The held-out entities (``holdout_mask``) are chosen by a hash of their index alone, so every
worker, the driver's evaluation and a later run agree on them without exchanging anything.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from distrec.compress.config import HoldoutConfig
from distrec.storage.embeddings import EmbeddingShards, EmbeddingTable

__all__ = ["holdout_mask", "read_slice", "feature_stats", "vector_batches"]


def holdout_mask(index: np.ndarray, holdout: HoldoutConfig, table: str) -> np.ndarray:
    """True for the rows of ``table`` kept out of compressor training (``holdout.fraction`` of
    them, by a splitmix64 hash of ``(seed, index)``)."""
    if holdout.table != table or holdout.fraction == 0:
        return np.zeros(len(index), dtype=bool)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        z = index.astype(np.uint64) + np.uint64(holdout.seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < holdout.fraction


def read_slice(uri: str, *, rank: int, world: int) -> EmbeddingTable:
    """This worker's row groups of the table (ranged reads; the driver verified the shards)."""
    return EmbeddingShards(uri, verify="none").read(rank=rank, world=world)


def feature_stats(vectors: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over every worker's ``vectors`` [n_r, d]."""
    x = torch.from_numpy(vectors).double()
    sums = torch.cat([torch.tensor([float(len(x))], dtype=torch.float64), x.sum(0), x.square().sum(0)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    d = vectors.shape[1]
    n = max(float(sums[0]), 1.0)
    mean = sums[1 : 1 + d] / n
    var = (sums[1 + d :] / n - mean.square()).clamp_min(0.0)
    return mean.float(), var.sqrt().float()


def vector_batches(
    vectors: np.ndarray, *, batch_size: int, steps: int, rng: np.random.Generator, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` shuffled batches (rows [B, d], weight [B]) of exactly ``batch_size`` rows, on
    ``device`` (the worker's rows go there once; each batch sends only its row indices).

    A worker whose rows run out fills its last batches with repeats of its own rows at weight 0
    (so batch-norm statistics stay those of real rows), or with zeros if it has no rows."""
    n, d = vectors.shape
    order = rng.permutation(n)
    x = torch.from_numpy(vectors).to(device)
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        real = len(idx)
        weight = torch.zeros(batch_size, device=device)
        weight[:real] = 1.0
        if n == 0:
            yield torch.zeros(batch_size, d, device=device), weight
            continue
        fill = rng.integers(0, n, batch_size - real)
        yield x[torch.from_numpy(np.concatenate([idx, fill])).to(device)], weight
