"""The canonical interaction data: columns, split codes, and the chunk that parsers yield.

A prepared dataset is a committed directory (see ``distrec.storage``) with kind
``"interactions"`` holding:

- ``part-NNNNN.parquet``: ``user`` int64 and ``item`` int64 (dense indices), ``rating`` float32,
  ``ts`` int64 unix seconds (null where the source has no time), and one int8 column
  ``split_<name>`` per recorded split (codes below);
- ``ids/user.parquet``, ``ids/item.parquet``: ``index`` → ``raw`` id;
- ``items.parquet`` (and ``users.parquet``) when the source has metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "KIND",
    "TRAIN",
    "VAL",
    "TEST",
    "DROPPED",
    "PROFILE",
    "PART_NAMES",
    "RatingChunk",
    "split_column",
    "interaction_schema",
]

SCHEMA_VERSION = 1
KIND = "interactions"

# Split codes stored in ``split_<name>`` columns. PROFILE: ratings of users held out of training,
# known at inference time as their profile (the cold-start protocol; see splits.py).
TRAIN, VAL, TEST, DROPPED, PROFILE = 0, 1, 2, -1, 3
PART_NAMES = {"train": TRAIN, "val": VAL, "test": TEST, "profile": PROFILE}


def split_column(name: str) -> str:
    return f"split_{name}"


def interaction_schema(split_names: list[str] = ()) -> pa.Schema:  # type: ignore[assignment]
    fields = [
        pa.field("user", pa.int64(), nullable=False),
        pa.field("item", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("ts", pa.int64(), nullable=True),
    ]
    fields += [pa.field(split_column(n), pa.int8(), nullable=False) for n in split_names]
    return pa.schema(fields)


@dataclass
class RatingChunk:
    """Rows parsed from a source, still with raw ids.

    ``user``/``item``: raw ids (int64 or str arrays, [N]); ``rating``: float32 [N];
    ``ts``: int64 unix seconds [N] or None; ``splits``: official split codes per row
    (int8 [N]) by split name, for datasets that ship their own split; ``where(r)`` names the
    file and line row ``r`` came from, for error messages.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray | None = None
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    where: Callable[[int], str] | None = None

    def __len__(self) -> int:
        return len(self.rating)
