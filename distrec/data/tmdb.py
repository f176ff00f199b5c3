"""The Movies Dataset (Kaggle ``rounakbanik/the-movies-dataset``): MovieLens ratings with TMDB metadata.

- ``ratings.csv`` (dataset ``tmdb``, 26M ratings) or ``ratings_small.csv`` (``tmdb-small``,
  100K): ``userId,movieId,rating,timestamp``, the MovieLens 20M/25M format.
- ``links.csv`` (or ``links_small.csv``): ``movieId,imdbId,tmdbId``; ``tmdbId`` may be empty.
- ``movies_metadata.csv``: one TMDB record per movie in a quoted CSV (overviews hold commas,
  quotes and newlines). Used: ``id`` (the tmdbId), ``title``, ``release_date`` (YYYY-MM-DD),
  ``genres`` (a Python literal such as ``[{'id': 16, 'name': 'Animation'}]``, read with
  ``ast.literal_eval``, which evaluates literals only, never code) and ``overview``.

Items keep the MovieLens ``movieId`` as raw id; their metadata is found through links.csv. The
Kaggle file has a few broken records (a shifted row whose ``id`` is a date, say): such records
are skipped, counted in the manifest as ``metadata_rows_skipped`` and logged with their lines.
"""

from __future__ import annotations

import ast
import logging
import re

import pyarrow as pa

from distrec.data.metadata import items_table
from distrec.data.movielens import RATINGS_CSV, read_rating_file
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.source import Source
from distrec.data.textparse import bad_line, csv_rows
from distrec.errors import DataError

__all__ = ["SPECS"]

log = logging.getLogger(__name__)

METADATA = "movies_metadata.csv"
_USED = ("id", "title", "release_date", "genres", "overview")
_DATE = re.compile(r"(\d{4})-\d{2}-\d{2}")
HOW_TO_GET = "the Kaggle dataset 'rounakbanik/the-movies-dataset' (ratings, links and movies_metadata CSV files)"


def _reader(ratings: str):
    def read(source: Source | None, options: ReadOptions) -> Parsed:
        assert source is not None
        if not source.has(ratings) and source.has("ratings_small.csv"):
            raise DataError(f"{source}: has ratings_small.csv but no {ratings}; prepare it as dataset 'tmdb-small'")
        meta: dict = {}
        chunks = read_rating_file(source, ratings, RATINGS_CSV, final_newline=options.verify)
        return Parsed(chunks=chunks, items=lambda: _items(source, meta), meta=meta)

    return read


def _items(source: Source, meta: dict) -> pa.Table | None:
    links = next((n for n in ("links.csv", "links_small.csv") if source.has(n)), None)
    if links is None or not source.has(METADATA):
        return None
    records, skipped = _metadata(source)
    meta["metadata_rows_skipped"] = skipped
    raw, title, year, genres, overview = [], [], [], [], []
    for movie, tmdb_id in _links(source, links):
        record = records.get(tmdb_id)
        if record is not None:
            raw.append(movie)
            title.append(record[0])
            year.append(record[1])
            genres.append(record[2])
            overview.append(record[3])
    return items_table(raw, title, year, genres, overview)


def _links(source: Source, name: str) -> list[tuple[int, int]]:
    """``(movieId, tmdbId)`` for every link that has a tmdbId."""
    label = source.label(name)
    rows = csv_rows(source, name)
    _, header = next(rows, (1, None))
    if header != ["movieId", "imdbId", "tmdbId"]:
        raise bad_line(label, 1, f"expected the header 'movieId,imdbId,tmdbId', got {header!r}")
    pairs = []
    for lineno, fields in rows:
        if len(fields) != 3:
            raise bad_line(label, lineno, f"expected 3 comma-separated fields (movieId, imdbId, tmdbId), got {len(fields)}")
        movie, _, tmdb_id = fields
        if not movie.isdecimal() or not (tmdb_id.isdecimal() or tmdb_id == ""):
            raise bad_line(label, lineno, f"expected integer movieId and tmdbId (tmdbId may be empty), got {fields!r}")
        if tmdb_id:
            pairs.append((int(movie), int(tmdb_id)))
    return pairs


def _metadata(source: Source) -> tuple[dict[int, tuple], int]:
    """tmdbId → (title, year, genre names, overview), first record wins; and the skipped count."""
    label = source.label(METADATA)
    rows = csv_rows(source, METADATA)
    _, header = next(rows, (1, []))
    missing = [c for c in _USED if c not in header]
    if missing:
        raise bad_line(label, 1, f"expected a header with the columns {', '.join(_USED)}; {', '.join(missing)} missing")
    col = {name: header.index(name) for name in _USED}
    records: dict[int, tuple] = {}
    skipped: list[int] = []
    for lineno, fields in rows:
        genres = _genre_names(fields[col["genres"]]) if len(fields) == len(header) else None
        if genres is None or not fields[col["id"]].isdecimal():
            skipped.append(lineno)
            continue
        date = _DATE.fullmatch(fields[col["release_date"]])
        records.setdefault(
            int(fields[col["id"]]),
            (fields[col["title"]], int(date[1]) if date else None, genres, fields[col["overview"]] or None),
        )
    if skipped:
        log.warning("%s: skipped %d malformed records (lines %s)", label, len(skipped), ", ".join(map(str, skipped[:10])))
    return records, len(skipped)


def _genre_names(text: str) -> list[str] | None:
    """``"[{'id': 16, 'name': 'Animation'}]"`` → ``["Animation"]``; None when it is not such a list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(g, dict) and isinstance(g.get("name"), str) for g in value):
        return None
    return [g["name"] for g in value]


SPECS = [
    DatasetSpec(
        name="tmdb",
        title="The Movies Dataset (MovieLens ratings with TMDB metadata)",
        urls=(),
        read=_reader("ratings.csv"),
        rating_range=(0.5, 5),
        rating_step=0.5,
        dates=("1995-01-09", "2017-08-04"),
        expected=(270_896, 45_115, 26_024_289),
        how_to_get=HOW_TO_GET,
    ),
    DatasetSpec(
        name="tmdb-small",
        title="The Movies Dataset, ratings_small.csv",
        urls=(),
        read=_reader("ratings_small.csv"),
        rating_range=(0.5, 5),
        rating_step=0.5,
        dates=("1995-01-09", "2016-10-16"),
        expected=(671, 9_066, 100_004),
        how_to_get=HOW_TO_GET,
    ),
]
