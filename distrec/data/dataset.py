"""A prepared interaction dataset opened for reading, and the rows of any set of its row groups.

Row groups are the unit of distribution: ``read(rank=, world=)`` reads worker ``rank``'s row
groups by ranged reads. Which rows a worker reads (its row groups, its users' rows, an item
range, everything) is decided in distrec/data/partition.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from distrec.data.partition import strided
from distrec.data.schema import KIND, PART_NAMES, SCHEMA_VERSION, split_column
from distrec.errors import DataError
from distrec.storage import MANIFEST, StoredDirectory, join
from distrec.storage.reader import Verify

__all__ = ["DataConfig", "InteractionDataset", "Interactions"]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """The ``data`` section of every job that reads a prepared dataset."""

    path: str  # a prepared dataset (jobs/prepare.py output), any URI
    split: str | None = None  # one of the dataset's recorded splits; None = its default
    verify: Verify = "size"  # "sha256" reads every shard once more at start

    def open(self) -> InteractionDataset:
        """The dataset at ``path``; when there is none, the error says how to make one."""
        try:
            return InteractionDataset(self.path, verify=self.verify)
        except DataError as e:
            raise DataError(
                f"data.path: {e}. Point data.path at a dataset made by jobs/prepare.py, e.g. "
                f"`python jobs/prepare.py ml-100k --out {self.path}` (see README: Datasets)"
            ) from None


@dataclass
class Interactions:
    """Columns of some ratings: ``user``/``item`` int64 [N], ``rating`` float32 [N], ``ts`` int64 [N] or None."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def concat(cls, parts: Sequence[Interactions]) -> Interactions:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        ts = None if any(p.ts is None for p in parts) else np.concatenate([p.ts for p in parts])  # type: ignore[misc]
        return cls(
            np.concatenate([p.user for p in parts]),
            np.concatenate([p.item for p in parts]),
            np.concatenate([p.rating for p in parts]),
            ts,
        )


class InteractionDataset:
    """``jobs/prepare.py`` output, verified on open (sizes; ``verify="sha256"`` reads it all).

    Unless ``verify="none"``, the manifest's user and item counts are also checked against the
    shards' Parquet statistics (only their footers are read): indices are dense, so the smallest
    must be 0 and the largest the count less one. Tables are sized by these counts, so a wrong
    one would otherwise train on the wrong rows or allocate for rows that do not exist."""

    def __init__(self, uri: str, *, verify: Verify = "size") -> None:
        self.uri = uri
        self.store = StoredDirectory(uri, kind=KIND, schema_version=SCHEMA_VERSION, verify=verify)
        self.meta = self.store.meta
        self.num_users = self._count("users")
        self.num_items = self._count("items")
        self.parts = self.store.manifest.paths("part-")
        if verify != "none":
            self._check_counts()

    def _count(self, key: str) -> int:
        value = self.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{join(self.uri, MANIFEST)}: meta.{key} is {value!r}, expected a positive whole number")
        return value

    def _check_counts(self) -> None:
        ranges = {part: self.store.column_ranges(part, ["user", "item"]) for part in self.parts}
        manifest = join(self.uri, MANIFEST)
        for column, key, count in (("user", "users", self.num_users), ("item", "items", self.num_items)):
            held = [(*r[column], part) for part, r in ranges.items() if r[column] is not None]  # (min, max, part)
            if not held:
                raise DataError(f"{manifest}: meta.{key} is {count:,} but the shards hold no rows")
            smallest, low = min((lo, part) for lo, _, part in held)
            largest, high = max((hi, part) for _, hi, part in held)
            if smallest < 0 or largest >= count:
                part, index = (low, smallest) if smallest < 0 else (high, largest)
                raise DataError(
                    f"{manifest}: meta.{key} is {count:,} but {join(self.uri, part)} holds {column} index {index:,}, "
                    f"outside 0..{count - 1:,}; the manifest does not match its data. Prepare the dataset again"
                )
            if smallest != 0 or largest != count - 1:
                raise DataError(
                    f"{manifest}: meta.{key} is {count:,} but the shards' {column} indices run {smallest:,}..{largest:,} "
                    f"(the largest in {join(self.uri, high)}), where dense indices run 0..{count - 1:,}; the manifest "
                    "does not match its data. Prepare the dataset again"
                )

    @property
    def splits(self) -> list[str]:
        return list(self.meta.get("splits", {}))

    def resolve_split(self, name: str | None) -> str:
        """The recorded split called ``name`` or prepared from the spec ``name`` (``u1:0.05`` →
        ``u1_val``); ``None`` → the default split; else a clear error."""
        name = name or self.meta.get("default_split")
        by_spec = {entry.get("spec"): split for split, entry in self.meta.get("splits", {}).items()}
        name = by_spec.get(name, name)
        if name not in self.splits:
            raise DataError(
                f"{self.uri}: no split named {name!r}; it records {', '.join(self.splits) or 'none'}. "
                "Choose one with data.split=NAME, or prepare it again with --split SPEC"
            )
        return str(name)

    def split_counts(self, split: str) -> dict[str, int]:
        return dict(self.meta["splits"][self.resolve_split(split)]["counts"])

    def row_groups(self) -> list[tuple[str, int]]:
        """Every (shard, row group) in manifest order; the row group size is in the manifest."""
        size = int(self.meta["row_group_size"])
        units = []
        for part in self.parts:
            rows = self.store.entry(part).rows
            units += [(part, g) for g in range(math.ceil(rows / size))]
        return units

    def read(
        self,
        *,
        split: str | None,
        parts: Sequence[str] = ("train",),
        rank: int = 0,
        world: int = 1,
        with_ts: bool = False,
    ) -> Interactions:
        """The rows of the given split parts (``train``/``val``/``test``) in worker ``rank``'s row
        groups (``partition.strided``: all of them for rank 0 of 1), in manifest order."""
        split = self.resolve_split(split)
        unknown = set(parts) - set(PART_NAMES)
        if unknown:
            raise DataError(f"unknown split part(s) {sorted(unknown)}; use {', '.join(PART_NAMES)}")
        codes = np.array([PART_NAMES[p] for p in parts], dtype=np.int8)
        mine = strided(self.row_groups(), rank=rank, world=world)
        by_part: dict[str, list[int]] = {}
        for part, group in mine:
            by_part.setdefault(part, []).append(group)
        columns = ["user", "item", "rating"] + (["ts"] if with_ts else []) + [split_column(split)]
        out = []
        for part, groups in by_part.items():
            table = self.store.read_row_groups(part, groups, columns)
            keep = np.isin(table.column(split_column(split)).to_numpy(), codes)
            out.append(_columns(table, keep, with_ts))
        return Interactions.concat(out)

    def read_table(self, path: str) -> pa.Table | None:
        """A metadata table (``items.parquet``, ``users.parquet``, ``ids/user.parquet``...) if present."""
        if path not in self.store.manifest.paths():
            return None
        return self.store.read_table(path)


def _columns(table: pa.Table, keep: np.ndarray, with_ts: bool) -> Interactions:
    ts = None
    if with_ts:
        col = table.column("ts")
        ts = col.to_numpy(zero_copy_only=False)[keep] if col.null_count == 0 else None
    return Interactions(
        user=table.column("user").to_numpy()[keep],
        item=table.column("item").to_numpy()[keep],
        rating=table.column("rating").to_numpy()[keep],
        ts=ts,
    )
