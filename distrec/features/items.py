"""Content features of the items of a prepared dataset, from its ``items.parquet``.

    content = item_content(dataset)      # genres multi-hot [I, G], year [I] in [0, 1], texts [I]

Rows are the dataset's dense item indices; items the metadata does not describe get no genre,
the mean year and an empty text. The year is min–max scaled over the catalogue; a missing year
is the mean of the known ones. The text of an item is its title, then its overview if the
source has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distrec.data.dataset import InteractionDataset

__all__ = ["ItemContent", "item_content"]


@dataclass(frozen=True)
class ItemContent:
    genres: np.ndarray  # float32 [I, G] multi-hot
    genre_names: list[str]  # [G]
    year: np.ndarray  # float32 [I], scaled to [0, 1]
    texts: list[str]  # [I]


def item_content(dataset: InteractionDataset) -> ItemContent:
    """The content features of every item (all zeros/empty when the dataset has no metadata)."""
    num_items = dataset.num_items
    table = dataset.read_table("items.parquet")
    if table is None:
        return ItemContent(np.zeros((num_items, 0), np.float32), [], np.zeros(num_items, np.float32), [""] * num_items)
    rows = table.to_pydict()
    index = np.asarray(rows["item"], dtype=np.int64)
    names = sorted({g for gs in rows["genres"] if gs for g in gs})
    column = {g: k for k, g in enumerate(names)}
    genres = np.zeros((num_items, len(names)), np.float32)
    years = np.full(num_items, np.nan)
    texts = [""] * num_items
    for i, gs, year, title, overview in zip(index, rows["genres"], rows["year"], rows["title"], rows["overview"]):
        genres[i, [column[g] for g in gs or []]] = 1.0
        if year is not None:
            years[i] = year
        texts[i] = " ".join(t for t in (title, overview) if t)
    known = years[~np.isnan(years)]
    if len(known):
        lo, hi = known.min(), known.max()
        years = np.where(np.isnan(years), known.mean(), years)
        years = (years - lo) / max(hi - lo, 1.0)
    else:
        years = np.zeros(num_items)
    return ItemContent(genres=genres, genre_names=names, year=years.astype(np.float32), texts=texts)
