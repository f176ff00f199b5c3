"""The dataset registry: name → official URLs, parser, rating scale and step, date range,
expected counts, splits.

Each parser module (``movielens``, ``netflix``, ``douban``, ``tmdb``, ``infae``, ``synthetic``)
exports ``SPECS``; ``get_dataset`` looks a name up and names the known ones when it is unknown.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from distrec.data.schema import RatingChunk
from distrec.data.source import Source
from distrec.errors import DataError

__all__ = ["DatasetSpec", "Parsed", "ReadOptions", "get_dataset", "dataset_names"]


@dataclass(frozen=True)
class ReadOptions:
    """What a parser is asked for: the official splits to decode, and generator settings.

    ``verify``: hold the files to the official release (each text file ends in a newline; a parser
    that recognises a release checks its official counts, as infae does for ML-1M);
    ``duplicates``: how repeated (user, item) pairs are treated (see ``duplicates.py``)."""

    splits: tuple[str, ...] = ()
    verify: bool = True
    duplicates: str = "refuse"
    seed: int = 0
    like: str | None = None  # synthetic: shape of a named dataset
    sizes: dict[str, float] = field(default_factory=dict)  # synthetic: explicit users/items/ratings


@dataclass
class Parsed:
    """A parser's output: rating chunks (streamed) and metadata tables keyed by ``raw`` id.

    ``meta`` may be filled while ``chunks`` is consumed (the synthetic noise floor, say);
    ``expected_rows`` (when known up front) sizes the row groups; ``checks`` says, one line
    each, which consistency checks the parser made (the summary's ``verified``).
    """

    chunks: Iterator[RatingChunk]
    expected_rows: int | None = None
    items: Callable[[], pa.Table | None] = lambda: None
    users: Callable[[], pa.Table | None] = lambda: None
    meta: dict = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    urls: tuple[str, ...]  # official downloads; empty when the files must be obtained by hand
    read: Callable[[Source | None, ReadOptions], Parsed]
    rating_range: tuple[float, float] | None  # inclusive; None = any finite value
    rating_step: float | None = None  # ratings are whole multiples of it (1: whole stars); None = any
    # first and last day of the official release's ratings (YYYY-MM-DD); None = not known or no times
    dates: tuple[str, str] | None = None
    expected: tuple[int, int, int] | None = None  # users, items, ratings of the official release
    official_splits: tuple[str, ...] = ()
    default_split: str = "user-ratio:0.8/0.1/0.1"
    needs_source: bool = True  # False for generators
    how_to_get: str = ""  # shown when there is no URL and no --source


def _all_specs() -> dict[str, DatasetSpec]:
    from distrec.data import douban, infae, movielens, netflix, synthetic, tmdb

    specs: dict[str, DatasetSpec] = {}
    for module in (movielens, netflix, douban, tmdb, infae, synthetic):
        for spec in module.SPECS:
            specs[spec.name] = spec
    return specs


def dataset_names() -> list[str]:
    return sorted(_all_specs())


def get_dataset(name: str) -> DatasetSpec:
    specs = _all_specs()
    if name not in specs:
        hint = difflib.get_close_matches(name, specs, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise DataError(f"unknown dataset {name!r}{extra}; known datasets: {', '.join(sorted(specs))}")
    return specs[name]
