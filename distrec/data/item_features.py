"""Item content as dense tensors: what content models (NCF profiles, two-tower) read about items.

A prepared dataset's ``items.parquet`` (``item`` dense index, ``raw``, ``title``, ``year``,
``genres``, ``overview``; see ``distrec.data.metadata``) becomes, for every item index
``0 … I-1``:

- ``genres`` float32 [I, G]: multi-hot over a genre vocabulary ``genre_names`` [G], sorted, so
  the same names give the same columns in every run and on every worker;
- ``year`` float32 [I]: the release year standardised by the known years' mean and std
  (``year_stats``), 0 where unknown, and ``year_missing`` float32 [I]: 1 where unknown;
- ``titles`` and ``overviews`` [I]: the texts, for an optional (frozen) text encoder.

Items the table does not list (a dataset without metadata, or rows added later) get no genres,
a missing year and empty texts, so a model reading these features still works for them. A
vocabulary and year statistics can be passed in to encode new items exactly as the training
items were encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError

__all__ = ["ItemFeatures", "item_features", "features_from_table"]


@dataclass(frozen=True)
class ItemFeatures:
    genres: torch.Tensor  # float32 [I, G] multi-hot
    genre_names: tuple[str, ...]  # [G], sorted
    year: torch.Tensor  # float32 [I], standardised; 0 where unknown
    year_missing: torch.Tensor  # float32 [I], 1 where the year is unknown
    year_stats: tuple[float, float]  # (mean, std) of the known years, in years
    titles: tuple[str, ...]  # [I], "" where unknown
    overviews: tuple[str, ...]  # [I], "" where unknown

    @property
    def num_items(self) -> int:
        return self.genres.shape[0]

    @property
    def width(self) -> int:
        """Columns of ``dense()``: G genres, the year and its missing flag."""
        return self.genres.shape[1] + 2

    def dense(self) -> torch.Tensor:
        """All numeric features side by side, float32 [I, G + 2]: genres | year | year_missing."""
        return torch.cat([self.genres, self.year[:, None], self.year_missing[:, None]], dim=1)

    def texts(self) -> list[str]:
        """One text per item for a text encoder: ``"title. overview"`` (or whichever is known)."""
        return [". ".join(t for t in (title, overview) if t) for title, overview in zip(self.titles, self.overviews)]


def item_features(
    dataset: InteractionDataset,
    *,
    genre_names: Sequence[str] | None = None,
    year_stats: tuple[float, float] | None = None,
) -> ItemFeatures:
    """The features of every item of a prepared dataset (all-empty if it has no ``items.parquet``)."""
    table = dataset.read_table("items.parquet")
    if table is None:
        table = pa.table({"item": pa.array([], pa.int64())})
    return features_from_table(table, num_items=dataset.num_items, genre_names=genre_names, year_stats=year_stats)


def features_from_table(
    table: pa.Table,
    *,
    num_items: int,
    genre_names: Sequence[str] | None = None,
    year_stats: tuple[float, float] | None = None,
) -> ItemFeatures:
    """Features of items ``0 … num_items-1`` from an items table with an ``item`` column; the
    other columns are optional. ``genre_names``: a fixed vocabulary (genres outside it are
    dropped); by default the table's own genres, sorted. ``year_stats``: (mean, std) to
    standardise with; by default the table's known years'."""
    if "item" not in table.column_names:
        raise DataError("items table has no 'item' column (dense item index); prepare the dataset again")
    index = table.column("item").to_numpy().astype(np.int64)
    if len(index) and (index.min() < 0 or index.max() >= num_items):
        raise DataError(f"items table: item index outside 0..{num_items - 1}")

    def column(name: str, kind: pa.DataType) -> pa.ChunkedArray:
        return table.column(name) if name in table.column_names else pa.chunked_array([pa.nulls(len(index), kind)])

    # genres: one (row, genre) pair per listed genre, vectorised through the flattened lists
    lists = column("genres", pa.list_(pa.string())).combine_chunks()
    lists = lists.fill_null(pa.scalar([], pa.list_(pa.string())))
    flat = pc.list_flatten(lists)
    row_of = pc.list_parent_indices(lists).to_numpy()
    names = tuple(genre_names) if genre_names is not None else tuple(sorted(set(flat.to_pylist())))
    column_of = pc.index_in(flat, value_set=pa.array(names, pa.string()))  # null where not in vocabulary
    known = column_of.is_valid().to_numpy(zero_copy_only=False)
    genres = torch.zeros(num_items, len(names))
    genres[torch.from_numpy(index[row_of[known]]), torch.from_numpy(column_of.drop_null().to_numpy().astype(np.int64))] = 1.0

    years = column("year", pa.int32()).to_numpy(zero_copy_only=False).astype(np.float64)  # NaN where null
    has_year = ~np.isnan(years)
    if year_stats is None:
        known_years = years[has_year]
        year_stats = (float(known_years.mean()), float(known_years.std() or 1.0)) if len(known_years) else (0.0, 1.0)
    mean, std = year_stats
    year = torch.zeros(num_items)
    missing = torch.ones(num_items)
    year[torch.from_numpy(index[has_year])] = torch.from_numpy((years[has_year] - mean) / std).float()
    missing[torch.from_numpy(index[has_year])] = 0.0

    def texts(name: str) -> tuple[str, ...]:
        out = [""] * num_items
        for i, text in zip(index.tolist(), column(name, pa.string()).to_pylist()):
            out[i] = text or ""
        return tuple(out)

    return ItemFeatures(
        genres=genres,
        genre_names=names,
        year=year,
        year_missing=missing,
        year_stats=(float(mean), float(std)),
        titles=texts("title"),
        overviews=texts("overview"),
    )
