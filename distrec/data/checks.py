"""What each parsed chunk must satisfy before it is stored, from the dataset's registry entry.

- Ratings lie on the dataset's scale and step: 1 to 5 whole stars for ML-100K, ML-1M, Netflix,
  Douban; 0.5 to 5 in half stars for ML-10M, 20M, 25M and the Movies Dataset. Always checked.
- Timestamps lie within the release's known dates (a day's margin either side for time zones),
  checked with the counts unless ``--no-verify``: a truncated line such as ``12\\t203\\t3\\t87``
  otherwise gives a rating from 1970.

Every check is one vectorised pass over the chunk's arrays; only the first bad row is located.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

import numpy as np

from distrec.data.registry import DatasetSpec
from distrec.data.schema import RatingChunk
from distrec.errors import DataError

__all__ = ["checked"]

_DAY = 86_400


def checked(spec: DatasetSpec, chunks: Iterable[RatingChunk], *, verify: bool) -> Iterator[RatingChunk]:
    """``chunks``, each checked against ``spec`` as it passes (dates only when ``verify``)."""
    dates = _date_bounds(spec.dates) if verify and spec.dates else None
    for chunk in chunks:
        _check_ratings(spec, chunk)
        if dates is not None and chunk.ts is not None:
            _check_dates(spec, chunk, dates)
        yield chunk


def _where(chunk: RatingChunk, row: int) -> str:
    return chunk.where(row) if chunk.where else f"row {row}"


def _check_ratings(spec: DatasetSpec, chunk: RatingChunk) -> None:
    r = chunk.rating
    bad = ~np.isfinite(r)
    if spec.rating_range is not None:
        lo, hi = spec.rating_range
        bad |= (r < lo) | (r > hi)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        scale = f"{spec.rating_range[0]:g} to {spec.rating_range[1]:g}" if spec.rating_range else "a finite number"
        raise DataError(f"{_where(chunk, row)}: rating {r[row]:g} is outside {spec.title}'s scale ({scale})")
    if spec.rating_step is not None:
        step = np.float32(spec.rating_step)
        off = np.round(r / step) * step != r  # exact in float32 for the steps used (1, 0.5)
        if off.any():
            row = int(np.flatnonzero(off)[0])
            lo, hi = spec.rating_range or (r.min(), r.max())
            raise DataError(
                f"{_where(chunk, row)}: rating {r[row]:g} is off {spec.title}'s scale, which goes from "
                f"{lo:g} to {hi:g} in steps of {spec.rating_step:g}"
            )


def _date_bounds(dates: tuple[str, str]) -> tuple[int, int]:
    """Unix seconds: the first day's start less a day, the last day's end plus a day (exclusive)."""
    first, last = (int(dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC).timestamp()) for d in dates)
    return first - _DAY, last + 2 * _DAY


def _check_dates(spec: DatasetSpec, chunk: RatingChunk, bounds: tuple[int, int]) -> None:
    ts = chunk.ts
    assert ts is not None
    lo, hi = bounds
    bad = (ts < lo) | (ts >= hi)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        first, last = spec.dates or ("", "")
        raise DataError(
            f"{_where(chunk, row)}: time {int(ts[row])} ({_utc(int(ts[row]))}) is outside {spec.title}'s dates "
            f"({first} to {last}); "
            "the line may be cut short or the file from another release. Pass --no-verify to accept it"
        )


def _utc(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "not a date"
