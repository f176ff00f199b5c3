"""Recommendations from a finished run's exports, without Ray: a user's top-k items (with
titles, years and genres from the dataset's metadata) next to the items they rated highest,
the top-k for a new user given liked items (folded in), and the items most similar to an item.

One implementation for the one-shot CLI (jobs/recommend.py) and the service (jobs/serve.py):
the run's model and catalogue (distrec/serve/artefacts.py, catalogue.py), top-k by exact
blocked search or an HNSW index (distrec/serve/topk.py). Scores follow the exported model:
``global_mean + user bias + item bias + p_u · q_i`` for biased MF, ``p_u · q_i + b_i`` for other
factor models, ``x_u B`` for EASE, ``Θ(x_u, X_s) α`` for ∞-AE. Items the user rated are not
recommended again (``exclude_seen``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.serve.artefacts import FactorModel, Query, RowModel, RunSpec, inspect_run, load_model
from distrec.serve.catalogue import Catalogue
from distrec.serve.errors import BadRequest, NotServable
from distrec.serve.topk import HNSWIndex, check_k, top_k

__all__ = ["Recommender", "load_recommender", "Index"]

Index = Literal["exact", "hnsw"]


class Recommender:
    def __init__(self, *, spec: RunSpec, model: FactorModel | RowModel, catalogue: Catalogue, index: Index = "exact") -> None:
        self.spec, self.model, self.catalogue, self.index_name = spec, model, catalogue, index
        self.index: HNSWIndex | None = None
        if index == "hnsw":
            if model.ann_items is None:
                raise NotServable(f"{spec.run}: index hnsw needs an inner-product model (mf, mf_bpr, two_tower); "
                                  f"{model.name} scores users' rows, so use index exact")  # fmt: skip
            self.index = HNSWIndex(model.ann_items)
        elif index != "exact":
            raise NotServable(f"index {index!r}: choose exact or hnsw")

    def describe(self, items: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        return self.catalogue.describe(items)

    def info(self) -> dict[str, Any]:
        """What is served: model, index, sizes, whether new users can be folded in, example ids."""
        c = self.catalogue
        return {"model": self.model.name, "index": self.index_name, "users": c.num_users, "items": c.num_items,
                "fold_in": self.model.fold_in_refusal is None, "fold_in_refusal": self.model.fold_in_refusal,
                "example_users": c.user_ids[:5], "example_items": c.item_ids[:5], "run": self.spec.run}  # fmt: skip

    def for_user(self, raw_user: object, k: int = 10, *, exclude_seen: bool = True) -> tuple[list[dict], list[dict]]:
        """(the user's highest-rated items, at most k; the top-k recommendations), with metadata."""
        u = self.catalogue.user(raw_user)
        items, ratings = self.catalogue.rated(u)
        exclude = np.unique(items) if exclude_seen else np.zeros(0, np.int64)
        recs = self._recommend(self.model.known(np.array([u]), [items]), exclude, k)
        liked = [row | {"rating": float(r)} for row, r in zip(self.describe(items[:k]), ratings[:k])]
        return liked, recs

    def for_items(
        self, raw_items: Sequence[object], ratings: Sequence[float] | None = None, k: int = 10
    ) -> tuple[list[dict], list[dict]]:
        """(the given items, the top-k for a new user who rated them), the user folded in (see
        distrec/serve/artefacts.py); ``ratings`` default to the top of the scale."""
        if not raw_items:
            raise BadRequest("items: give at least one item id")
        items = np.array([self.catalogue.item(raw) for raw in raw_items], np.int64)
        repeated = [raw for n, raw in enumerate(raw_items) if items[n] in items[:n]]
        if repeated:
            raise BadRequest(f"items: {str(repeated[0])!r} is given more than once")
        given = None
        if ratings is not None:
            given = np.asarray(ratings, np.float64)
            if given.shape != items.shape:
                raise BadRequest(f"ratings: {len(given)} ratings for {len(items)} items; give one per item, or none")
            if not np.isfinite(given).all():
                raise BadRequest("ratings: every rating must be a finite number")
        recs = self._recommend(self.model.new(items, None if given is None else given.astype(np.float32)), items, k)
        shown = given if given is not None else np.full(len(items), self.catalogue.rating_max)
        return [row | {"rating": float(r)} for row, r in zip(self.describe(items), shown)], recs

    def similar_items(self, raw_item: object, k: int = 10) -> list[dict]:
        """The k items most similar to this one: the highest cosine similarity of item vectors
        (factor models), or the scores of a user who has only this item (EASE, ∞-AE)."""
        i = self.catalogue.item(raw_item)
        k = check_k(k, self.catalogue.num_items - 1)
        scores, top = top_k(self.model.similar(i), k=k, exclude=[np.array([i])])
        _check_finite(scores, self.spec)
        return [row | {"similarity": float(s)} for row, s in zip(self.describe(top[0].numpy()), scores[0].tolist())]

    def _recommend(self, query: Query, exclude: np.ndarray, k: int) -> list[dict]:
        k = check_k(k, self.catalogue.num_items - len(exclude))
        scores, items = None, None
        if self.index is not None:
            found = self.index.search(query.vectors.numpy(), k=k, exclude=[exclude])[0]
            if found is not None:  # else the index came back short: answered exactly
                items = torch.from_numpy(found)[None, :]
                scores = (self.model.items[items[0]] @ query.vectors[0])[None, :]  # type: ignore[union-attr]
        if scores is None or items is None:
            scores, items = top_k(self.model.blocks(query), k=k, exclude=[exclude])
        scores = scores + torch.from_numpy(np.asarray(query.offset, np.float32))[:, None]
        _check_finite(scores, self.spec)
        return [row | {"score": float(s)} for row, s in zip(self.describe(items[0].numpy()), scores[0].tolist())]


def _check_finite(scores: torch.Tensor, spec: RunSpec) -> None:
    if not bool(torch.isfinite(scores).all()):
        raise DataError(f"{spec.run}: the model gives non-finite scores (NaN or infinite values in its exports)")


def load_recommender(run: str, *, index: Index = "exact", spec: RunSpec | None = None) -> Recommender:
    """``run``: a training or fit output_dir (local path or any URI) with servable exports
    (``spec``: its ``inspect_run``, when the caller has it already)."""
    spec = spec or inspect_run(run)
    catalogue = Catalogue.read(InteractionDataset(spec.dataset))
    return Recommender(spec=spec, model=load_model(spec, catalogue), catalogue=catalogue, index=index)
