"""Large input files in the exact upstream formats, for benchmarks (the real ones can't be
downloaded here): MovieLens-25M ``ratings.csv`` and Netflix Prize ``combined_data_*.txt``.
Written block by block with Arrow's CSV writer, so 100M rows never sit in memory."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["write_movielens_csv", "write_netflix_text"]

_NO_HEADER = pacsv.WriteOptions(include_header=False, quoting_style="none")
_HALF_STARS = pa.array([f"{k / 2:.1f}" for k in range(1, 11)])  # "0.5" ... "5.0", as in the release


def _popular_items(rng: np.random.Generator, n: int, items: int) -> np.ndarray:
    return (rng.pareto(1.2, n) * items / 50).astype(np.int64) % items + 1  # popular items first


def _distinct_pairs(rng: np.random.Generator, n: int, users: tuple[int, int], items: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct (user, item) pairs, users in ``[users[0], users[1])``, sorted by user then item
    (the release's order): pairs are drawn until there are enough, then ``n`` of them chosen."""
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < n:
        more = 2 * (n - len(keys)) + 16
        drawn = rng.integers(*users, more) * (items + 1) + _popular_items(rng, more, items)
        keys = np.unique(np.concatenate([keys, drawn]))
    keys = np.sort(rng.choice(keys, n, replace=False))
    return keys // (items + 1), keys % (items + 1)


def write_movielens_csv(path: str, rows: int, *, seed: int = 0, block: int = 2_000_000) -> int:
    """``userId,movieId,rating,timestamp`` with half-star ratings like ``3.5``, one per (user, movie)
    pair, sorted by user then movie as in the release; returns bytes. Each block of rows covers its
    own range of users, so pairs are distinct across blocks too."""
    rng = np.random.default_rng(seed)
    users, items = 162_541, 59_047
    blocks = max(1, -(-rows // block))
    with open(path, "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        for b in range(blocks):
            n = rows // blocks + (b < rows % blocks)
            user, item = _distinct_pairs(rng, n, (users * b // blocks + 1, users * (b + 1) // blocks + 1), items)
            stars = pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 10, n), pa.int8()), _HALF_STARS)
            table = pa.table({"u": user, "i": item, "r": stars, "t": rng.integers(789_652_009, 1_574_327_703, n)})
            pacsv.write_csv(table, f, _NO_HEADER)
    return os.path.getsize(path)


def write_netflix_text(path: str, rows: int, *, seed: int = 0, movies: int = 17_770) -> int:
    """``MovieID:`` blocks of ``CustomerID,Rating,YYYY-MM-DD`` lines, movies in order, each
    customer at most once per movie; returns bytes."""
    rng = np.random.default_rng(seed)
    per_movie = np.maximum(rng.multinomial(rows, np.full(movies, 1.0 / movies)), 0)
    days = np.datetime64("1999-11-11")
    with open(path, "wb") as f:
        for movie, n in enumerate(per_movie, start=1):
            f.write(f"{movie}:\n".encode())
            if not n:
                continue
            table = pa.table(
                {
                    "c": rng.choice(2_649_424, n, replace=False) + 6,
                    "r": rng.integers(1, 6, n),
                    "d": pa.array(days + rng.integers(0, 2_240, n).astype("timedelta64[D]")),
                }
            )
            pacsv.write_csv(table, f, _NO_HEADER)
    return os.path.getsize(path)
