"""The Netflix Prize training set, its probe split and the movie titles.

- Ratings: ``combined_data_1.txt`` … ``combined_data_4.txt`` (the Kaggle "netflix-prize-data"
  layout) or, failing those, the original release's ``mv_0000001.txt`` … ``mv_0017770.txt``
  (``training_set/``, one movie per file). Same grammar in both: a ``MovieID:`` line, then one
  ``CustomerID,Rating,YYYY-MM-DD`` line per rating of that movie. Dates become unix seconds at
  00:00 UTC.
- ``probe.txt``: the same blocks with bare ``CustomerID`` lines; it defines the official split
  ``probe`` (rows listed there are TEST, all others TRAIN).
- ``movie_titles.csv`` (Kaggle) or ``movie_titles.txt`` (original): ``MovieID,YearOfRelease,Title``,
  latin-1, the year may be ``NULL`` and everything after the second comma is the title.

The ratings are 2 GB of text, so each block from ``textparse.newline_blocks`` is handled without
per-line Python: the ``MovieID:`` lines are found by their colons, cut out, and the remaining
lines go to Arrow's CSV reader in one call; movie ids are assigned with ``np.repeat`` over the
line counts between headers. The line mapping travels with the rows, so an error (Arrow's or the
rating-range check's) still names the exact line of the original file. Arrow parses one block
ahead in a background thread (``textparse.parse_ahead``) while Python works on the current one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from distrec.data.metadata import items_table
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import TEST, TRAIN, RatingChunk
from distrec.data.source import Source
from distrec.data.splits import find_keys, pair_keys
from distrec.data.textparse import (
    BLOCK_SIZE,
    Field,
    TextFormat,
    bad_line,
    newline_blocks,
    parse_ahead,
    parse_block,
    text_lines,
)
from distrec.errors import DataError

__all__ = ["SPECS", "RATING_LINE", "PROBE_LINE", "read_movie_blocks"]

log = logging.getLogger(__name__)

RATING_LINE = TextFormat(
    b",",
    (Field("user", "int"), Field("rating", "int"), Field("date", "date")),
    "CustomerID,Rating,YYYY-MM-DD lines, each movie's after its 'MovieID:' line",
)
PROBE_LINE = TextFormat(b",", (Field("user", "int"),), "CustomerID lines, each movie's after its 'MovieID:' line")
_HEADER = re.compile(rb"(\d{1,18}):\r?\n")  # 18 digits always fit in int64
_COMBINED = re.compile(r"combined_data_(\d+)\.txt")
_PER_MOVIE = re.compile(r"mv_\d+\.txt")
_SECONDS_PER_DAY = 86_400
LineOf = Callable[[int], int]  # row of a parsed block → line of the file


def read_movie_blocks(
    source: Source, name: str, fmt: TextFormat, *, block_size: int = BLOCK_SIZE, final_newline: bool = False
) -> Iterator[tuple[np.ndarray, pa.Table, LineOf]]:
    """``(movie id per row [N], rows in fmt, row → line number)`` per block of a ``MovieID:`` file
    (``final_newline``: see ``textparse.newline_blocks``)."""
    label = source.label(name)
    with source.open(name) as f:
        for table, (movies, line_of) in parse_ahead(_block_jobs(f, label, fmt, block_size, final_newline)):
            yield movies, table, line_of


def _block_jobs(
    f: BinaryIO, label: str, fmt: TextFormat, block_size: int, final_newline: bool
) -> Iterator[tuple[Callable[[], pa.Table], tuple[np.ndarray, LineOf]]]:
    """Per block: the (deferred) parse of its rating lines, and (movie id per row, row → line)."""
    movie: int | None = None  # the movie whose lines run on into the next block
    first_line = 1  # of the current block, counted from its segments (no second pass over the bytes)
    for block in newline_blocks(f, label, block_size, final_newline=final_newline):
        headers = _header_lines(block)
        # Segment s runs from the end of header s-1 to the start of header s; segment 0
        # continues the previous block's movie.
        starts = [0] + [m.end() for m in headers]
        ends = [m.start() for m in headers] + [len(block)]
        movies = [movie] + [int(m.group(1)) for m in headers]
        seg_lines = np.array([block.count(b"\n", a, b) for a, b in zip(starts, ends)], dtype=np.int64)
        first_lines = first_line + np.concatenate([[0], np.cumsum(seg_lines[:-1] + 1)])  # +1: the header
        first_line = int(first_lines[-1] + seg_lines[-1])
        keep = np.flatnonzero(seg_lines)
        if len(keep) and keep[0] == 0 and movie is None:
            text = block[: block.find(b"\n")].decode("latin-1")
            raise bad_line(label, int(first_lines[0]), f"expected a 'MovieID:' line before the ratings, got {text[:200]!r}")
        if headers:
            movie = movies[-1]
        if not len(keep):
            continue
        counts = seg_lines[keep]
        row_start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first row of each kept segment
        seg_line = first_lines[keep]  # ... and its line in the file

        def line_of(row: int, row_start=row_start, seg_line=seg_line) -> int:
            s = int(np.searchsorted(row_start, row, side="right")) - 1
            return int(seg_line[s] + row - row_start[s])

        view = memoryview(block)
        data = b"".join(view[starts[s] : ends[s]] for s in keep)
        parse = partial(parse_block, label, fmt, data, line_of, lines=int(counts.sum()))
        yield parse, (np.repeat(np.array([movies[s] for s in keep], dtype=np.int64), counts), line_of)


def _header_lines(block: bytes) -> list[re.Match[bytes]]:
    """The ``MovieID:`` lines of a block, in order.

    Rating lines hold no colon, so finding the colons (a memchr scan) and matching only their
    lines is many times faster than a multi-line regex over the whole block. A colon line that is
    not a valid header stays among the rating lines, where the parser rejects it by line number."""
    found = []
    colon = block.find(b":")
    while colon >= 0:
        m = _HEADER.match(block, block.rfind(b"\n", 0, colon) + 1)
        if m and m.end(1) == colon:
            found.append(m)
        colon = block.find(b":", colon + 1)
    return found


class _Probe:
    """The probe set as sorted (movie, customer) keys, and which of them the ratings contained.

    Keys are movie-major because a chunk of ratings covers a few hundred consecutive movies, so
    ``find_keys`` looks up only the short run of probe keys for those movies."""

    def __init__(self, source: Source, *, final_newline: bool) -> None:
        blocks = read_movie_blocks(source, "probe.txt", PROBE_LINE, final_newline=final_newline)
        keys = [pair_keys(movie, table.column("user").to_numpy()) for movie, table, _ in blocks]
        self.keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        self.seen = np.zeros(len(self.keys), dtype=bool)

    def codes(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        hit, found = find_keys(pair_keys(item, user), self.keys)
        self.seen[found] = True
        return np.where(hit, np.int8(TEST), np.int8(TRAIN))


def _rating_files(source: Source) -> list[str]:
    combined = {int(m[1]): name for name in source.names() if (m := _COMBINED.fullmatch(name))}
    if combined:
        return [combined[part] for part in sorted(combined)]
    per_movie = sorted(n for n in source.names() if _PER_MOVIE.fullmatch(n))
    if per_movie:
        return per_movie
    raise DataError(
        f"{source}: no Netflix ratings found; expected combined_data_1.txt … combined_data_4.txt "
        "(Kaggle) or the training set's mv_0000001.txt … files"
    )


def _read(source: Source | None, options: ReadOptions) -> Parsed:
    assert source is not None
    files = _rating_files(source)
    log.info("netflix: reading %d rating file(s): %s", len(files), ", ".join(files[:4]) + (" …" if len(files) > 4 else ""))
    if "probe" in options.splits and not source.has("probe.txt"):
        raise DataError(f"{source}: the official split 'probe' needs probe.txt")
    probe = _Probe(source, final_newline=options.verify) if "probe" in options.splits else None
    meta: dict = {"rating_files": len(files)}

    def chunks() -> Iterator[RatingChunk]:
        for name in files:
            label = source.label(name)
            for item, table, line_of in read_movie_blocks(source, name, RATING_LINE, final_newline=options.verify):
                user = table.column("user").to_numpy()
                days = table.column("date").cast(pa.int32()).to_numpy()
                chunk = RatingChunk(
                    user=user,
                    item=item,
                    rating=table.column("rating").to_numpy().astype(np.float32),
                    ts=np.multiply(days, _SECONDS_PER_DAY, dtype=np.int64),
                    where=lambda r, label=label, line_of=line_of: f"{label}, line {line_of(r)}",
                )
                if probe is not None:
                    chunk.splits["probe"] = probe.codes(user, item)
                yield chunk
        if probe is not None:
            missing = int((~probe.seen).sum())
            meta["probe_rows_not_in_ratings"] = missing
            if missing:
                log.warning("netflix: %d probe.txt rows are not among the ratings read", missing)

    return Parsed(chunks=chunks(), items=lambda: _movie_titles(source), meta=meta)


def _movie_titles(source: Source) -> pa.Table | None:
    name = next((n for n in ("movie_titles.csv", "movie_titles.txt") if source.has(n)), None)
    if name is None:
        return None
    label = source.label(name)
    raw, title, year = [], [], []
    for lineno, line in text_lines(source, name, "latin-1"):
        parts = line.split(",", 2)
        if len(parts) != 3:
            raise bad_line(label, lineno, f"expected MovieID,YearOfRelease,Title, got {line[:200]!r}")
        movie, released, name_ = parts
        if not movie.isdecimal():
            raise bad_line(label, lineno, f"MovieID {movie!r} is not an integer")
        if not (released.isdecimal() or released == "NULL"):
            raise bad_line(label, lineno, f"YearOfRelease {released!r} is neither a year nor NULL")
        raw.append(int(movie))
        year.append(int(released) if released != "NULL" else None)
        title.append(name_)
    return items_table(raw, title, year, [[] for _ in raw])


SPECS = [
    DatasetSpec(
        name="netflix",
        title="Netflix Prize",
        urls=(),
        read=_read,
        rating_range=(1, 5),
        rating_step=1,
        dates=("1998-10-01", "2005-12-31"),
        expected=(480_189, 17_770, 100_480_507),
        official_splits=("probe",),
        default_split="probe",
        how_to_get=(
            "the Netflix Prize data: Kaggle's 'netflix-inc/netflix-prize-data' (combined_data_1..4.txt, "
            "probe.txt, movie_titles.csv) or the archive.org copy of the original nf_prize_dataset.tar.gz "
            "(unpack it and its training_set.tar into one directory)"
        ),
    )
]
