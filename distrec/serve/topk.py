"""Top-k over a catalogue: exact (blocked matrix product + top-k) and an HNSW index (faiss).

Exact search scores the catalogue in blocks of ``BLOCK`` items and keeps a running top-k, so
memory stays at [queries, BLOCK] whatever the catalogue's size; items a query excludes (what
the user already rated) score −∞ before each block's top-k.

The HNSW index is faiss's ``IndexHNSWFlat``. HNSW searches a metric space, and recommendation
scores are inner products; the index uses the Euclidean reduction of maximum inner product
search (Bachrach et al. 2014, "Speeding up the Xbox recommender system using a Euclidean
transformation for inner-product spaces"): every item vector gets one more coordinate,
``√(M² − |x|²)`` with M the largest item norm, and queries a 0, so that the nearest items in L2
are those of the largest inner product. Excluded items are filtered after the search, which
fetches ``k`` plus the number of excluded items; a query the index cannot fill is answered
exactly. faiss-cpu rather than hnswlib: it ships binary wheels (hnswlib 0.8.0 has only a source
distribution, so installing it needs a C++ toolchain) and is maintained by its authors.

The one rule for ``k`` (``check_k``): an integer with 1 ≤ k ≤ the number of candidates (items
not excluded), so every answer holds exactly k finite scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from distrec.serve.errors import BadRequest

__all__ = ["BLOCK", "BadK", "check_k", "matmul_blocks", "top_k", "HNSWIndex"]

BLOCK = 1 << 16  # items scored at once by exact search


class BadK(BadRequest):
    """A ``k`` outside 1 … the number of candidates."""


def check_k(k: object, candidates: int) -> int:
    """``k`` if it is an integer in [1, candidates], else a ``BadK`` saying the allowed range."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise BadK(f"k={k!r}: must be an integer")
    if not 1 <= int(k) <= candidates:
        raise BadK(f"k={k}: must be between 1 and {candidates} (the items that can be recommended here)")
    return int(k)


def matmul_blocks(queries: torch.Tensor, items: torch.Tensor, *, block: int = BLOCK) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, queries @ items[start:start + block]ᵀ)`` for ``queries`` [B, D], ``items`` [I, D]."""
    for start in range(0, len(items), block):
        yield start, queries @ items[start : start + block].T  # [B, b]


def top_k(
    blocks: Iterable[tuple[int, torch.Tensor]], *, k: int, exclude: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (scores [B, k], items [B, k]) over score blocks ``(start, scores [B, b])``
    covering the catalogue, the items ``exclude[row]`` left out of row ``row``. The caller has
    checked ``k`` against the candidates (``check_k``)."""
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start, scores in blocks:
        width = scores.shape[1]
        scores = scores.clone() if any(len(e) for e in exclude) else scores  # a block may be a view of model weights
        for row, items in enumerate(exclude):
            inside = items[(items >= start) & (items < start + width)] - start
            scores[row, torch.from_numpy(inside)] = -math.inf
        s, i = scores.topk(min(k, width), dim=1)
        i = i + start
        if best_s is not None:
            s, pick = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
            i = torch.cat([best_i, i], 1).gather(1, pick)  # type: ignore[list-item]
        best_s, best_i = s, i
    assert best_s is not None and best_i is not None, "no score blocks"
    return best_s, best_i


class HNSWIndex:
    """Approximate maximum inner product search over ``items`` [I, D] (float32)."""

    def __init__(self, items: np.ndarray, *, m: int = 32, ef_construction: int = 200, ef_search: int = 128) -> None:
        import faiss

        items = np.ascontiguousarray(items, dtype=np.float32)
        norms = np.einsum("id,id->i", items, items)  # |x|² [I]
        extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]  # √(M² − |x|²) [I, 1]
        self.ef_search = ef_search
        self.index = faiss.IndexHNSWFlat(items.shape[1] + 1, m, faiss.METRIC_L2)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(np.hstack([items, extra]).astype(np.float32))

    def search(self, queries: np.ndarray, *, k: int, exclude: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Per query [B, D], its k items (best first), or None where the index returned fewer
        than k items that are not excluded (the caller answers that query exactly)."""
        import faiss

        queries = np.hstack([np.asarray(queries, np.float32), np.zeros((len(queries), 1), np.float32)])
        out: list[np.ndarray | None] = []
        for row, q in enumerate(queries):
            fetch = min(k + len(exclude[row]), self.index.ntotal)
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
            _, found = self.index.search(q[None, :], fetch, params=params)
            found = found[0][found[0] >= 0]
            found = found[~np.isin(found, exclude[row])][:k]
            out.append(found.astype(np.int64) if len(found) == k else None)
        return out
