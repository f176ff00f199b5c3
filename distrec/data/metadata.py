"""Item and user metadata in one shape for every source.

``items.parquet``: ``raw`` (the source's item id), ``title``, ``year`` (nullable int32),
``genres`` (list of strings), ``overview`` (nullable text). After preparation an ``item``
column (the dense index) is added and items never rated are dropped. ``users.parquet`` has
``raw`` and whatever the source knows (age, gender, occupation, zip code).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa

__all__ = ["items_table", "split_title_year", "ITEM_SCHEMA"]

ITEM_SCHEMA = pa.schema(
    [
        pa.field("raw", pa.int64()),
        pa.field("title", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("overview", pa.string()),
    ]
)

_YEAR = re.compile(r"\s*\((\d{4})(?:[–-]\d{0,4})?\)\s*$")


def split_title_year(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` → ``("Toy Story", 1995)``; titles without a year keep ``None``."""
    m = _YEAR.search(title)
    if not m:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def items_table(
    raw: Sequence[int],
    title: Sequence[str],
    year: Sequence[int | None],
    genres: Sequence[Sequence[str]],
    overview: Sequence[str | None] | None = None,
) -> pa.Table:
    return pa.table(
        {
            "raw": pa.array(raw, pa.int64()),
            "title": pa.array(title, pa.string()),
            "year": pa.array(year, pa.int32()),
            "genres": pa.array([list(g) for g in genres], pa.list_(pa.string())),
            "overview": pa.array(overview if overview is not None else [None] * len(raw), pa.string()),
        },
        schema=ITEM_SCHEMA,
    )
