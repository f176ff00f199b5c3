"""Recommendations from a finished run's exported embeddings, without Ray: a user's top-k items
(with titles, years and genres from the dataset's metadata) next to the items they rated
highest, and the items most similar to an item.

Scores follow the exported model: ``global_mean + user bias + item bias + p_u · q_i`` when the
tables carry biases (biased MF), the dot product otherwise. Items the user rated are not
recommended again, so ``k`` is between 1 and the number of items the user has not rated (items
other than this one for similar items), and every score returned is a finite number: a table
that gives NaN or ±inf (a diverged run) is refused, so the job's JSON is always valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from distrec.cli import UserError
from distrec.data.dataset import InteractionDataset
from distrec.storage import DataError, join
from distrec.storage.embeddings import EmbeddingTable, read_embeddings

__all__ = ["Recommender", "load_recommender"]


@dataclass
class Recommender:
    users: EmbeddingTable
    items: EmbeddingTable
    dataset: InteractionDataset
    item_meta: pa.Table | None

    def _index(self, table: EmbeddingTable, raw: str, what: str) -> int:
        if table.raw is None:
            raise DataError(f"the exported {what} table has no raw ids; pass the dense index instead")
        matches = np.flatnonzero(table.raw.astype(str) == str(raw))
        if not len(matches):
            raise DataError(f"{what} {raw!r} is not in this run's data ({len(table.raw):,} {what}s)")
        return int(table.index[matches[0]])

    def describe(self, items: np.ndarray) -> list[dict]:
        """Title, year and genres (where the dataset has them) and the raw id of dense items."""
        rows = [{"item": self.items.raw[i] if self.items.raw is not None else int(i)} for i in items]
        if self.item_meta is not None:
            by_index = {int(x): n for n, x in enumerate(self.item_meta.column("item").to_numpy())}
            cols = {c: self.item_meta.column(c).to_pylist() for c in ("title", "year", "genres") if c in self.item_meta.column_names}
            for row, i in zip(rows, items):
                n = by_index.get(int(i))
                if n is not None:
                    row.update({c: v[n] for c, v in cols.items()})
        return rows

    def for_user(self, raw_user: str, k: int = 10) -> tuple[list[dict], list[dict]]:
        """(the user's highest-rated items, the top-k recommendations), each with metadata."""
        u = self._index(self.users, raw_user, "user")
        rated = self.dataset.read(split=None, parts=["train", "val", "test"])
        mine = rated.user == u
        seen = np.unique(rated.item[mine])
        _check_k(k, len(self.items.vector) - len(seen), f"items user {raw_user!r} has not rated")
        scores = self.items.vector @ self.users.vector[u]  # [items]
        if "bias" in self.items.columns and "bias" in self.users.columns:
            scores = scores + self.items.columns["bias"] + self.users.columns["bias"][u] + self.users.meta.get("global_mean", 0.0)
        _check_finite(scores, f"user {raw_user!r}")
        scores[seen] = -np.inf  # never recommended: k is at most the unseen items, so none is picked
        top = np.argsort(-scores)[:k]
        recs = [row | {"score": float(scores[i])} for row, i in zip(self.describe(top), top)]
        order = np.argsort(-rated.rating[mine], kind="stable")[:k]
        liked = [row | {"rating": float(r)} for row, r in zip(self.describe(rated.item[mine][order]), rated.rating[mine][order])]
        return liked, recs

    def similar_items(self, raw_item: str, k: int = 10) -> list[dict]:
        """The k items whose vectors have the highest cosine similarity to this item's."""
        i = self._index(self.items, raw_item, "item")
        _check_k(k, len(self.items.vector) - 1, f"items other than item {raw_item!r}")
        unit = self.items.vector / np.maximum(np.linalg.norm(self.items.vector, axis=1, keepdims=True), 1e-12)
        sims = unit @ unit[i]
        _check_finite(sims, f"item {raw_item!r}")
        sims[i] = -np.inf
        top = np.argsort(-sims)[:k]
        return [row | {"similarity": float(sims[j])} for row, j in zip(self.describe(top), top)]


def _check_k(k: int, available: int, what: str) -> None:
    if not available:
        raise UserError(f"k={k}: there are no {what}; nothing to recommend")
    if not 1 <= k <= available:
        raise UserError(f"k={k}: there are {available:,} {what}; give a k from 1 to {available:,}")


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise DataError(f"the exported embeddings give non-finite scores (NaN or ±inf) for {what}: did the training diverge?")


def load_recommender(run: str) -> Recommender:
    """``run``: a training output_dir (local or any URI) with ``embeddings/user`` and ``embeddings/item``."""
    users = read_embeddings(join(run, "embeddings", "user"))
    items = read_embeddings(join(run, "embeddings", "item"))
    dataset = InteractionDataset(users.meta["dataset"])
    return Recommender(users=users, items=items, dataset=dataset, item_meta=dataset.read_table("items.parquet"))
