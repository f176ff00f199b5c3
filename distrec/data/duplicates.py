"""Repeated (user, item) pairs: refused, naming both lines, or resolved as the user asked.

Every supported release holds one rating per (user, item) pair (MovieLens, Netflix, the Movies
Dataset; Douban is a matrix), so a repeated pair means a damaged, concatenated or hand-edited
file. ``PairCheck`` finds one after the last chunk without per-row Python: each row's dense
(user, item) pair and its row number are packed into one int64, one in-place sort of those
keys puts the repeats side by side, and the row numbers give both lines (100M rows: 800 MB of
keys, one sort). ``--duplicates keep-last|mean`` resolves them instead (``resolve_duplicates``):
that needs every rating before the first is stored, so it holds the parsed rows in memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, get_args

import numpy as np

from distrec.data.idmap import IdMap
from distrec.data.schema import RatingChunk
from distrec.errors import DataError

__all__ = ["Duplicates", "DUPLICATES", "PairCheck", "Rows", "first_repeat", "resolve_duplicates"]

# refuse: a repeated pair is an error; keep-last: a pair's last line wins (rating, time, split);
# mean: a pair's last line with the mean of its ratings
Duplicates = Literal["refuse", "keep-last", "mean"]
DUPLICATES: tuple[str, ...] = get_args(Duplicates)


class Rows:
    """Where each row of a run of chunks came from: ``rows(r)`` → ``"FILE, line N"``."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.wheres: list[Callable[[int], str] | None] = []

    def add(self, n: int, where: Callable[[int], str] | None) -> None:
        self.ends.append((self.ends[-1] if self.ends else 0) + n)
        self.wheres.append(where)

    def __call__(self, row: int) -> str:
        c = bisect_right(self.ends, row)
        local = row - (self.ends[c - 1] if c else 0)
        where = self.wheres[c]
        return where(local) if where else f"row {row}"


def first_repeat(keys: np.ndarray) -> tuple[int, int] | None:
    """``(earlier, later)`` rows: ``later`` is the first row [of N] whose key occurred before and
    ``earlier`` that occurrence; None when the keys are distinct. (A stable argsort: for the
    small files it is used on, and as the reference for ``PairCheck``'s packed sort.)"""
    order = np.argsort(keys, kind="stable")
    at = _repeats(keys[order])
    if not len(at):
        return None
    later = order[at + 1]  # within a key, rows ascend (stable sort)
    k = int(np.argmin(later))
    return int(order[at[k]]), int(later[k])


class PairCheck:
    """Collects each chunk's dense (user, item) pairs; ``check`` refuses a repeated pair.

    ``key_bits``: the bits a packed key may use; when pair and row number do not fit (more
    than 2**63 users × items × rows), the keys are sorted with an argsort instead (more memory)."""

    def __init__(self, *, key_bits: int = 63) -> None:
        self.key_bits = key_bits
        self.parts: list[np.ndarray] = []  # user << 32 | item [n] per chunk (dense ids < 2**31)
        self.rows = Rows()

    def add(self, user: np.ndarray, item: np.ndarray, where: Callable[[int], str] | None) -> None:
        """One chunk's dense indices ``user``/``item`` (int64 [n]) and its row → line mapping."""
        self.parts.append((user << 32) | item)
        self.rows.add(len(user), where)

    def check(self, users: IdMap, items: IdMap) -> None:
        """Raise a DataError naming both lines of the first repeated pair (in file order). The
        collected keys are let go either way."""
        found = self._first_repeat(len(users), len(items))
        if found is None:
            return
        earlier, later, user, item = found
        raise DataError(
            f"{self.rows(later)}: user {users.raw_ids()[user]}, item {items.raw_ids()[item]} is rated again "
            f"(first at {self.rows(earlier)}); the upstream files hold one rating per (user, item) pair. "
            "Pass --duplicates keep-last or --duplicates mean to resolve repeated pairs"
        )

    def _first_repeat(self, num_users: int, num_items: int) -> tuple[int, int, int, int] | None:
        """``(earlier row, later row, user, item)`` of the first repeat, or None."""
        parts, self.parts = self.parts, []
        n = sum(len(p) for p in parts)
        row_bits = max(n - 1, 1).bit_length()
        if max(num_users * num_items - 1, 1).bit_length() + row_bits > self.key_bits:
            keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            found = first_repeat(keys)
            return None if found is None else (*found, int(keys[found[1]]) >> 32, int(keys[found[1]]) & 0xFFFFFFFF)
        packed = np.empty(n, dtype=np.int64)  # (user · items + item) << row_bits | row [N]
        start = 0
        parts.reverse()
        while parts:
            part = parts.pop()  # each chunk's keys go as they are packed: one copy in memory
            stop = start + len(part)
            pair = (part >> 32) * num_items + (part & 0xFFFFFFFF)
            packed[start:stop] = (pair << row_bits) | np.arange(start, stop)
            start = stop
        packed.sort()
        at = np.concatenate(  # places whose pair equals the next one's, compared a slice at a time
            [np.zeros(0, dtype=np.int64)]
            + [_repeats(packed[lo : lo + _SLICE + 1] >> row_bits) + lo for lo in range(0, max(n - 1, 0), _SLICE)]
        )
        if not len(at):
            return None
        mask = (1 << row_bits) - 1
        later = packed[at + 1] & mask  # within a pair, rows ascend
        k = int(np.argmin(later))
        user, item = divmod(int(packed[at[k]] >> row_bits), num_items)
        return int(packed[at[k]] & mask), int(later[k]), user, item


_SLICE = 1 << 24


def _repeats(ranked: np.ndarray) -> np.ndarray:
    return np.flatnonzero(ranked[1:] == ranked[:-1])


def resolve_duplicates(chunks: Iterable[RatingChunk], policy: str, meta: dict) -> Iterable[RatingChunk]:
    """``chunks`` with repeated (user, item) pairs resolved by ``policy`` (one of DUPLICATES;
    ``refuse`` passes them through for ``PairCheck``). Records the policy, and how many rows it
    removed, in ``meta``."""
    if policy not in DUPLICATES:
        raise DataError(f"duplicates: {policy!r} is not one of {', '.join(DUPLICATES)}")
    meta["duplicates"] = policy
    return chunks if policy == "refuse" else _resolved(chunks, policy == "mean", meta)


def _resolved(chunks: Iterable[RatingChunk], mean: bool, meta: dict) -> Iterator[RatingChunk]:
    """All the chunks, held, then passed on without the rows of a repeated pair but its last
    (rows keep file order); ``mean``: that row's rating becomes the mean of the pair's ratings."""
    held = list(chunks)
    meta["duplicate_rows_removed"] = 0
    if not held:
        return
    _, user = np.unique(np.concatenate([c.user for c in held]), return_inverse=True)
    _, item = np.unique(np.concatenate([c.item for c in held]), return_inverse=True)
    key = user.astype(np.int64) * (int(item.max()) + 1) + item  # a dense pair id [N]
    del user, item
    order = np.argsort(key, kind="stable")  # by pair, then row
    ranked = key[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # each pair's first place in order
    del key, ranked
    ends = np.r_[starts[1:], len(order)]
    last = order[ends - 1]  # each pair's last row
    keep = np.zeros(len(order), dtype=bool)
    keep[last] = True
    rating = np.concatenate([c.rating for c in held])
    if mean:
        rating[last] = (np.add.reduceat(rating[order].astype(np.float64), starts) / (ends - starts)).astype(np.float32)
    meta["duplicate_rows_removed"] = len(order) - len(last)
    del order, starts, ends, last
    held.reverse()
    start = 0
    while held:
        chunk = held.pop()  # let each chunk go once it is passed on
        stop = start + len(chunk)
        rows = np.flatnonzero(keep[start:stop])
        yield RatingChunk(
            user=chunk.user[rows],
            item=chunk.item[rows],
            rating=rating[start:stop][rows],
            ts=None if chunk.ts is None else chunk.ts[rows],
            splits={name: codes[rows] for name, codes in chunk.splits.items()},
            where=None if chunk.where is None else (lambda r, where=chunk.where, rows=rows: where(int(rows[r]))),
        )
        start = stop
