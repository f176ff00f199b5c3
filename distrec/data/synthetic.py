"""Synthetic ratings with a planted structure and a known best achievable RMSE.

    score(u, i)  = mu + b_u + b_i + p_u · q_i          (rank-r factors)
    rating(u, i) = clip(round_to_step(score + eps), lo, hi),   eps ~ N(0, sigma²)

User activity and item popularity follow power laws (a few users rate thousands of items, most
rate tens), timestamps increase along each user's history. Users are generated block by block
from ``(seed, block)``, so a Netflix-sized set (100M ratings) never needs the whole table in
memory and any block can be regenerated alone.

The noise floor recorded in the manifest is the Bayes-optimal RMSE: sqrt(mean over rows of
Var[rating | score]), computed exactly from the normal CDF over the rating grid. No model can do
better in expectation; a model that recovers ``E[rating | score]`` reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from distrec.data.metadata import items_table
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import RatingChunk
from distrec.errors import DataError

__all__ = ["SPECS", "SHAPES", "Planted", "Shape"]

BLOCK_RATINGS = 2_000_000  # about this many ratings are generated (and held) at a time

GENRES = (
    "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy FilmNoir "
    "Horror Musical Mystery Romance SciFi Thriller War Western"
).split()


@dataclass(frozen=True)
class Shape:
    users: int
    items: int
    ratings: int
    lo: float = 1.0
    hi: float = 5.0
    step: float = 1.0
    min_per_user: int = 20


SHAPES = {
    "ml-100k": Shape(943, 1682, 100_000),
    "ml-1m": Shape(6040, 3706, 1_000_209),
    "ml-25m": Shape(162_541, 59_047, 25_000_095, lo=0.5, step=0.5),
    "netflix": Shape(480_189, 17_770, 100_480_507, min_per_user=1),
}


@dataclass(frozen=True)
class Planted:
    mean: float = 3.55
    user_bias_std: float = 0.35
    item_bias_std: float = 0.45
    rank: int = 4
    interaction_std: float = 0.4  # std of p_u · q_i
    noise_std: float = 0.85
    popularity_exponent: float = 0.9  # item popularity ∝ (rank + 10) ** -exponent
    activity_sigma: float = 1.0  # log-normal spread of per-user activity


def _shape(options: ReadOptions) -> Shape:
    if options.like and options.sizes:
        raise DataError("synthetic: give either --like NAME or explicit sizes, not both")
    if options.like:
        if options.like not in SHAPES:
            raise DataError(f"synthetic: unknown shape --like {options.like!r}; choose one of {sorted(SHAPES)}")
        return SHAPES[options.like]
    sizes = dict(options.sizes) or {"users": 943, "items": 1682, "ratings": 100_000}
    unknown = set(sizes) - {"users", "items", "ratings", "min_per_user"}
    if unknown:
        raise DataError(f"synthetic: unknown size keys {sorted(unknown)}; use users, items, ratings, min_per_user")
    shape = Shape(
        users=int(sizes.get("users", 943)),
        items=int(sizes.get("items", 1682)),
        ratings=int(sizes.get("ratings", 100_000)),
        min_per_user=int(sizes.get("min_per_user", 5)),
    )
    if min(shape.users, shape.items, shape.ratings) <= 0:
        raise DataError(f"synthetic: users, items and ratings must be positive, got {shape}")
    if shape.ratings > 0.5 * shape.users * shape.items:
        raise DataError(f"synthetic: {shape.ratings} ratings is over half of {shape.users}×{shape.items}; too dense")
    return shape


def _activity(shape: Shape, planted: Planted, rng: np.random.Generator) -> np.ndarray:
    """Ratings per user [users]: log-normal, at least ``min_per_user``, at most 30 % of the items,
    summing to ``ratings`` (what the cap cuts off is handed to the users below it)."""
    cap = max(shape.min_per_user, int(0.3 * shape.items))
    weights = rng.lognormal(0.0, planted.activity_sigma, shape.users)
    counts = np.full(shape.users, min(shape.min_per_user, cap), dtype=np.int64)
    for _ in range(50):
        short = shape.ratings - int(counts.sum())
        room = counts < cap
        if short <= 0 or not room.any():
            break
        share = np.where(room, weights, 0.0)
        extra = share / share.sum() * short
        add = np.floor(extra).astype(np.int64)
        if add.sum() == 0:  # hand out the last few one by one, largest remainders first
            add[np.argsort(-extra)[:short]] = 1
        counts = np.minimum(counts + add, cap)
    return counts


def _generate(shape: Shape, planted: Planted, seed: int, meta: dict) -> Iterator[RatingChunk]:
    rng = np.random.default_rng([seed, 0])
    r = planted.rank
    factor_std = (planted.interaction_std**2 / r) ** 0.25  # Var(p·q) = r · s⁴
    q = rng.normal(0, factor_std, (shape.items, r)).astype(np.float32)
    b_item = rng.normal(0, planted.item_bias_std, shape.items).astype(np.float32)
    popularity = (np.arange(shape.items) + 10.0) ** -planted.popularity_exponent
    cdf = np.cumsum(popularity[rng.permutation(shape.items)])
    cdf /= cdf[-1]
    counts = _activity(shape, planted, rng)
    block_users = max(1, int(BLOCK_RATINGS / max(counts.mean(), 1)))
    total_var, total_rows = 0.0, 0
    for block, start in enumerate(range(0, shape.users, block_users)):
        brng = np.random.default_rng([seed, 1, block])
        n_u = counts[start : start + block_users]
        users = np.arange(start, start + len(n_u))
        p = brng.normal(0, factor_std, (len(n_u), r)).astype(np.float32)
        b_user = brng.normal(0, planted.user_bias_std, len(n_u)).astype(np.float32)
        local, item = _sample_items(n_u, cdf, brng)  # local: user index within this block
        score = planted.mean + b_user[local] + b_item[item] + np.einsum("nr,nr->n", p[local], q[item])
        noisy = score + brng.normal(0, planted.noise_std, len(score)).astype(np.float32)
        rating = np.clip(np.round(noisy / shape.step) * shape.step, shape.lo, shape.hi).astype(np.float32)
        var = _conditional_variance(score, shape, planted.noise_std)
        total_var += float(var.sum())
        total_rows += len(var)
        # each history starts in 2000..2019 and its ratings fall at increasing times before 2020
        start_ts = brng.integers(946_684_800, 1_546_300_800, len(n_u))
        gaps = brng.exponential(1.0, len(local))
        elapsed = _cumsum_by_group(gaps, local)
        total = np.bincount(local, weights=gaps, minlength=len(n_u)) + brng.exponential(1.0, len(n_u))
        ts = start_ts[local] + (elapsed / total[local] * (1_577_836_800 - start_ts[local])).astype(np.int64)
        meta["noise_floor_rmse"] = math.sqrt(total_var / total_rows)
        yield RatingChunk(user=users[local] + 1, item=item + 1, rating=rating, ts=ts)
    meta["planted"] = asdict(planted)
    meta["shape"] = asdict(shape)


def _sample_items(n_u: np.ndarray, cdf: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_u[u]`` distinct items per user drawn by popularity; returns (local user [M], item [M]).

    Draws with replacement, keeps the first distinct ones, and draws again for users still
    short (heavy users collide on popular items), so counts come out exact."""
    owner = np.zeros(0, dtype=np.int64)
    item = np.zeros(0, dtype=np.int64)
    short = n_u.astype(np.int64)
    draw = _InverseCdf(cdf)
    for _ in range(8):
        if not short.any():
            break
        extra = np.repeat(np.arange(len(n_u)), (short * 1.3).astype(np.int64) + 4 * (short > 0))
        owner = np.concatenate([owner, extra])
        item = np.concatenate([item, draw(rng.random(len(extra)))])
        first = _first_of_each(owner * len(cdf) + item)  # earlier draws win; draw order is kept
        owner, item = owner[first], item[first]
        order = np.argsort(owner, kind="stable")
        owner, item = owner[order], item[order]
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        rank = np.arange(len(owner)) - np.repeat(starts, np.diff(np.r_[starts, len(owner)]))  # within owner
        keep = rank < n_u[owner]
        owner, item = owner[keep], item[keep]
        short = n_u - np.bincount(owner, minlength=len(n_u))
    return owner, item


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct value of ``keys`` (non-negative int64
    [N]), ascending: ``np.unique(..., return_index=True)`` with one sort of (key, index) packed
    into 64 bits instead of a stable argsort (3× faster)."""
    shift = max(len(keys) - 1, 1).bit_length()
    assert not len(keys) or int(keys.max()) < 1 << (63 - shift), "keys too large to pack with their index"
    packed = np.sort((keys << shift) | np.arange(len(keys)))
    value = packed >> shift
    first = packed[np.r_[True, value[1:] != value[:-1]]] & ((1 << shift) - 1)
    first.sort()
    return first


class _InverseCdf:
    """``np.searchsorted(cdf, u, side="right")`` (clipped to the last item) through a table of
    2**16 equal buckets of [0, 1): a draw whose bucket holds no step of the CDF is answered by
    the table, only the others are searched. Same answers, about 3× faster on the popularity
    CDFs here, where most of the mass sits in a few items' long steps."""

    BUCKETS = 1 << 16

    def __init__(self, cdf: np.ndarray) -> None:
        self.cdf = cdf
        edges = np.arange(self.BUCKETS + 1) / self.BUCKETS  # exact in float64
        at = np.searchsorted(cdf, edges, side="right")
        self.lo, self.settled = at[:-1], at[:-1] == at[1:]

    def __call__(self, u: np.ndarray) -> np.ndarray:
        bucket = (u * self.BUCKETS).astype(np.int64)
        out = self.lo[bucket]
        open_ = np.flatnonzero(~self.settled[bucket])
        out[open_] = np.searchsorted(self.cdf, u[open_], side="right")
        return out.clip(0, len(self.cdf) - 1)


def _cumsum_by_group(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting at each new value of the (contiguous) ``group``."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    offset = np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, len(values)]))
    return total - offset


def _conditional_variance(score: np.ndarray, shape: Shape, sigma: float) -> np.ndarray:
    """Var[rating | score] for the rounded, clipped rating (exact, from the normal CDF)."""
    grid = np.arange(shape.lo, shape.hi + shape.step / 2, shape.step)
    edges = np.concatenate([[-np.inf], grid[:-1] + shape.step / 2, [np.inf]])
    s = torch.from_numpy(np.asarray(score, dtype=np.float64))[:, None]
    cdf = torch.special.ndtr((torch.from_numpy(edges)[None, :] - s) / sigma)
    prob = cdf[:, 1:] - cdf[:, :-1]  # [N, K]
    values = torch.from_numpy(grid)[None, :]
    mean = (prob * values).sum(1)
    return ((prob * values**2).sum(1) - mean**2).numpy()


def _items(shape: Shape, planted: Planted, seed: int):
    rng = np.random.default_rng([seed, 0])
    r = planted.rank
    factor_std = (planted.interaction_std**2 / r) ** 0.25
    q = rng.normal(0, factor_std, (shape.items, r))  # the same draws as _generate
    year_rng = np.random.default_rng([seed, 2])
    years = year_rng.integers(1950, 2021, shape.items)
    genres = []
    for row in q:
        top = np.argsort(-row)[:2]
        genres.append([GENRES[k % len(GENRES)] for k in top if row[k] > 0.5 * factor_std] or [GENRES[top[0] % len(GENRES)]])
    titles = [f"Synthetic item {i + 1}" for i in range(shape.items)]
    overview = [f"{' and '.join(g)} film from {y}." for g, y in zip(genres, years)]
    return items_table(np.arange(1, shape.items + 1), titles, years.tolist(), genres, overview)


def _read(source, options: ReadOptions) -> Parsed:
    shape = _shape(options)
    planted = Planted()
    meta: dict = {"like": options.like, "seed": options.seed}
    return Parsed(
        chunks=_generate(shape, planted, options.seed, meta),
        expected_rows=shape.ratings,
        items=lambda: _items(shape, planted, options.seed),
        meta=meta,
    )


SPECS = [
    DatasetSpec(
        name="synthetic",
        title="Synthetic ratings with planted biases, factors and noise",
        urls=(),
        read=_read,
        rating_range=(0.5, 5),
        rating_step=0.5,
        default_split="random:0.8/0.1/0.1",
        needs_source=False,
    )
]
