"""MovieLens 100K, 1M, 10M, 20M and 25M in their GroupLens release formats.

- 100K: ``u.data`` (tab: user, item, rating, unix time), the official folds ``u1..u5`` and
  ``ua``/``ub`` (``uN.base`` / ``uN.test``), ``u.item`` (pipe-separated, latin-1) or the
  ``items.tsv`` atomic-file variant, ``u.user`` or ``users.tsv``.
- 1M and 10M: ``ratings.dat`` (``user::item::rating::time``), ``movies.dat``
  (``id::Title (year)::Genre|Genre``), 1M also ``users.dat``.
- 20M and 25M: ``ratings.csv`` (header ``userId,movieId,rating,timestamp``), ``movies.csv``.

Each release holds one rating per (user, item) pair, whole stars (100K, 1M) or half stars (10M
on), and every file ends in a newline. The date ranges are those the READMEs give (100K, 20M,
25M); the 1M and 10M READMEs give none, so theirs are the first and last days of those files.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from distrec.data.duplicates import Rows, first_repeat
from distrec.data.metadata import items_table, split_title_year
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import TEST, TRAIN, RatingChunk
from distrec.data.source import Source
from distrec.data.splits import find_keys, pair_keys
from distrec.data.textparse import Field, TextFormat, bad_line, csv_rows, first_bad_row, parse_delimited, text_lines
from distrec.errors import DataError

__all__ = ["SPECS", "read_rating_file", "RATING_FIELDS"]

RATING_FIELDS = (Field("user", "int"), Field("item", "int"), Field("rating", "float"), Field("ts", "int"))
U_DATA = TextFormat(b"\t", RATING_FIELDS, "tab-separated user id, item id, rating, unix timestamp")
RATINGS_DAT = TextFormat(b"::", RATING_FIELDS, "'::'-separated UserID, MovieID, Rating, Timestamp")
RATINGS_CSV = TextFormat(
    b",",
    RATING_FIELDS,
    "comma-separated userId, movieId, rating, timestamp after a header line",
    header=("userId", "movieId", "rating", "timestamp"),
)
ML100K_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
GROUPLENS = "https://files.grouplens.org/datasets/movielens"


def read_rating_file(source: Source, name: str, fmt: TextFormat, *, final_newline: bool = False) -> Iterator[RatingChunk]:
    """Rating chunks (raw ids) from one file in a user/item/rating/time format
    (``final_newline``: see ``textparse.newline_blocks``)."""
    label = source.label(name)
    with source.open(name) as f:
        for line, table in parse_delimited(f, label, fmt, final_newline=final_newline):
            yield RatingChunk(
                user=table.column("user").to_numpy(),
                item=table.column("item").to_numpy(),
                rating=table.column("rating").to_numpy().astype(np.float32),
                ts=table.column("ts").to_numpy(),
                where=lambda r, line=line: f"{label}, line {line + r}",
            )


# -- 100K ---------------------------------------------------------------------------------------
class _FoldFile:
    """One file of an official fold (``u1.test``, say): its (user, item) keys in file order, the
    same sorted without repeats, and which of those u.data has shown so far."""

    def __init__(self, source: Source, name: str, options: ReadOptions) -> None:
        self.rows = Rows()
        keys = []
        for chunk in read_rating_file(source, name, U_DATA, final_newline=options.verify):
            keys.append(pair_keys(chunk.user, chunk.item))
            self.rows.add(len(chunk), chunk.where)
        self.keys = np.concatenate(keys)  # [N], file order
        if options.duplicates == "refuse" and (found := first_repeat(self.keys)):
            earlier, later = found
            raise DataError(f"{self.rows(later)}: {_pair(self.keys[later])} is listed again (first at {self.rows(earlier)})")
        self.sorted = np.unique(self.keys)
        self.seen = np.zeros(len(self.sorted), dtype=bool)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` [n] the file lists (bool [n]); marks them seen."""
        hit, found = find_keys(keys, self.sorted)
        self.seen[found] = True
        return hit

    def first_unseen(self) -> int | None:
        """The first row of the file whose pair u.data did not hold, or None."""
        return first_bad_row(np.isin(self.keys, self.sorted[~self.seen]))


def _pair(key: np.integer) -> str:
    return f"user {int(key) >> 32}, item {int(key) & 0xFFFFFFFF}"


class _Fold:
    """An official fold (``uN.base`` + ``uN.test``): the two files must partition u.data's pairs."""

    def __init__(self, source: Source, fold: str, options: ReadOptions) -> None:
        self.name = fold
        for part in ("test", "base"):
            if not source.has(f"{fold}.{part}"):
                raise DataError(
                    f"{source}: the official split {fold!r} needs {fold}.base and {fold}.test; {fold}.{part} is missing"
                )
        self.test, self.base = (_FoldFile(source, f"{fold}.{part}", options) for part in ("test", "base"))
        r = first_bad_row(find_keys(self.test.keys, self.base.sorted)[0])
        if r is not None:
            other = int(np.flatnonzero(self.base.keys == self.test.keys[r])[0])
            raise DataError(
                f"{self.test.rows(r)}: {_pair(self.test.keys[r])} is also in {self.base.rows(other)}; "
                f"{fold}.base and {fold}.test must not share a rating"
            )

    def codes(self, chunk: RatingChunk, keys: np.ndarray) -> np.ndarray:
        """TEST/TRAIN [n] for a chunk of u.data with pair ``keys`` [n]."""
        in_test, in_base = self.test.find(keys), self.base.find(keys)
        r = first_bad_row(~in_test & ~in_base)
        if r is not None:
            raise DataError(f"{chunk.where(r)}: rating is in neither {self.name}.base nor {self.name}.test")  # type: ignore[misc]
        return np.where(in_test, TEST, TRAIN).astype(np.int8)

    def check_all_seen(self) -> None:
        for part in (self.test, self.base):
            r = part.first_unseen()
            if r is not None:
                raise DataError(
                    f"{part.rows(r)}: {_pair(part.keys[r])} is not in u.data; {self.name}.base and "
                    f"{self.name}.test must partition u.data's ratings"
                )


def _read_100k(source: Source | None, options: ReadOptions) -> Parsed:
    assert source is not None
    folds = [_Fold(source, fold, options) for fold in options.splits]

    def chunks() -> Iterator[RatingChunk]:
        for chunk in read_rating_file(source, "u.data", U_DATA, final_newline=options.verify):
            keys = pair_keys(chunk.user, chunk.item)
            for fold in folds:
                chunk.splits[fold.name] = fold.codes(chunk, keys)
            yield chunk
        for fold in folds:
            fold.check_all_seen()

    return Parsed(chunks=chunks(), items=lambda: _items_100k(source), users=lambda: _users_100k(source))


def _items_100k(source: Source) -> pa.Table | None:
    if source.has("u.item"):
        label = source.label("u.item")
        raw, title, year, genres = [], [], [], []
        for lineno, line in text_lines(source, "u.item", "latin-1"):
            parts = line.split("|")
            if len(parts) != 5 + len(ML100K_GENRES):
                raise bad_line(label, lineno, f"expected {5 + len(ML100K_GENRES)} '|'-separated fields, got {len(parts)}")
            try:
                raw.append(int(parts[0]))
            except ValueError:
                raise bad_line(label, lineno, f"movie id {parts[0]!r} is not an integer") from None
            t, y = split_title_year(parts[1])
            if y is None and parts[2][-4:].isdecimal():
                y = int(parts[2][-4:])
            title.append(t)
            year.append(y)
            genres.append([g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag == "1"])
        return items_table(raw, title, year, genres)
    if source.has("items.tsv"):
        return _items_atomic(source, "items.tsv")
    return None


def _items_atomic(source: Source, name: str) -> pa.Table:
    """The tab-separated atomic-file variant: ``item_id:token movie_title:token_seq release_year:token class:token_seq``."""
    label = source.label(name)
    rows = list(text_lines(source, name, "utf-8"))
    if not rows:
        raise DataError(f"{label}: empty file")
    header = [h.split(":")[0] for h in rows[0][1].split("\t")]
    need = {"item_id", "movie_title"}
    if not need <= set(header):
        raise bad_line(label, 1, f"expected a header with item_id and movie_title, got {rows[0][1]!r}")
    col = {h: i for i, h in enumerate(header)}
    raw, title, year, genres = [], [], [], []
    for lineno, line in rows[1:]:
        parts = line.split("\t")
        if len(parts) != len(header):
            raise bad_line(label, lineno, f"expected {len(header)} tab-separated fields, got {len(parts)}")
        try:
            raw.append(int(parts[col["item_id"]]))
        except ValueError:
            raise bad_line(label, lineno, f"item_id {parts[col['item_id']]!r} is not an integer") from None
        title.append(parts[col["movie_title"]])
        y = parts[col["release_year"]] if "release_year" in col else ""
        year.append(int(y) if y.isdecimal() else None)
        genres.append(parts[col["class"]].split() if "class" in col else [])
    return items_table(raw, title, year, genres)


def _users_100k(source: Source) -> pa.Table | None:
    if source.has("u.user"):
        return _users_delimited(source, "u.user", "|", ("age", "gender", "occupation", "zip_code"), "latin-1")
    if source.has("users.tsv"):
        return _users_delimited(source, "users.tsv", "\t", ("age", "gender", "occupation", "zip_code"), "utf-8", header=True)
    return None


def _users_delimited(
    source: Source, name: str, sep: str, fields: tuple[str, ...], encoding: str, header: bool = False
) -> pa.Table:
    label = source.label(name)
    columns: dict[str, list] = {"raw": [], **{f: [] for f in fields}}
    for lineno, line in text_lines(source, name, encoding):
        if header and lineno == 1:
            continue
        parts = line.split(sep)
        if len(parts) != 1 + len(fields):
            raise bad_line(label, lineno, f"expected {1 + len(fields)} {sep!r}-separated fields, got {len(parts)}")
        try:
            columns["raw"].append(int(parts[0]))
        except ValueError:
            raise bad_line(label, lineno, f"user id {parts[0]!r} is not an integer") from None
        for f, v in zip(fields, parts[1:]):
            columns[f].append(v)
    return pa.table({k: pa.array(v, pa.int64() if k == "raw" else pa.string()) for k, v in columns.items()})


# -- 1M / 10M / 20M / 25M ----------------------------------------------------------------------
def read_movies_dat(source: Source, encoding: str) -> pa.Table | None:
    if not source.has("movies.dat"):
        return None
    label = source.label("movies.dat")
    raw, title, year, genres = [], [], [], []
    for lineno, line in text_lines(source, "movies.dat", encoding):
        parts = line.split("::")
        if len(parts) != 3:
            raise bad_line(label, lineno, f"expected MovieID::Title::Genres, got {line[:200]!r}")
        try:
            raw.append(int(parts[0]))
        except ValueError:
            raise bad_line(label, lineno, f"MovieID {parts[0]!r} is not an integer") from None
        t, y = split_title_year(parts[1])
        title.append(t)
        year.append(y)
        genres.append([g for g in parts[2].split("|") if g and g != "(no genres listed)"])
    return items_table(raw, title, year, genres)


def _movies_csv(source: Source) -> pa.Table | None:
    if not source.has("movies.csv"):
        return None
    label = source.label("movies.csv")
    raw, title, year, genres = [], [], [], []
    rows = csv_rows(source, "movies.csv")
    _, header = next(rows, (1, None))
    if header != ["movieId", "title", "genres"]:
        raise bad_line(label, 1, f"expected the header 'movieId,title,genres', got {header!r}")
    for lineno, parts in rows:
        if len(parts) != 3:
            raise bad_line(label, lineno, f"expected 3 comma-separated fields (movieId, title, genres), got {len(parts)}")
        try:
            raw.append(int(parts[0]))
        except ValueError:
            raise bad_line(label, lineno, f"movieId {parts[0]!r} is not an integer") from None
        t, y = split_title_year(parts[1])
        title.append(t)
        year.append(y)
        genres.append([g for g in parts[2].split("|") if g and g != "(no genres listed)"])
    return items_table(raw, title, year, genres)


def _reader(ratings: str, fmt: TextFormat, items, users=None):
    def read(source: Source | None, options: ReadOptions) -> Parsed:
        assert source is not None
        return Parsed(
            chunks=read_rating_file(source, ratings, fmt, final_newline=options.verify),
            items=lambda: items(source),
            users=(lambda: users(source)) if users else (lambda: None),
        )

    return read


def _users_1m(source: Source) -> pa.Table | None:
    if not source.has("users.dat"):
        return None
    return _users_delimited(source, "users.dat", "::", ("gender", "age", "occupation", "zip_code"), "latin-1")


SPECS = [
    DatasetSpec(
        name="ml-100k",
        title="MovieLens 100K",
        urls=(f"{GROUPLENS}/ml-100k.zip",),
        read=_read_100k,
        rating_range=(1, 5),
        rating_step=1,
        dates=("1997-09-19", "1998-04-22"),
        expected=(943, 1682, 100_000),
        official_splits=ML100K_FOLDS,
        default_split="u1",
    ),
    DatasetSpec(
        name="ml-1m",
        title="MovieLens 1M",
        urls=(f"{GROUPLENS}/ml-1m.zip",),
        read=_reader("ratings.dat", RATINGS_DAT, lambda s: read_movies_dat(s, "latin-1"), _users_1m),
        rating_range=(1, 5),
        rating_step=1,
        dates=("2000-04-25", "2003-02-28"),
        expected=(6040, 3706, 1_000_209),
    ),
    DatasetSpec(
        name="ml-10m",
        title="MovieLens 10M",
        urls=(f"{GROUPLENS}/ml-10m.zip",),
        read=_reader("ratings.dat", RATINGS_DAT, lambda s: read_movies_dat(s, "utf-8")),
        rating_range=(0.5, 5),
        rating_step=0.5,
        dates=("1995-01-09", "2009-01-05"),
        expected=(69_878, 10_677, 10_000_054),
    ),
    DatasetSpec(
        name="ml-20m",
        title="MovieLens 20M",
        urls=(f"{GROUPLENS}/ml-20m.zip",),
        read=_reader("ratings.csv", RATINGS_CSV, _movies_csv),
        rating_range=(0.5, 5),
        rating_step=0.5,
        dates=("1995-01-09", "2015-03-31"),
        expected=(138_493, 26_744, 20_000_263),
    ),
    DatasetSpec(
        name="ml-25m",
        title="MovieLens 25M",
        urls=(f"{GROUPLENS}/ml-25m.zip",),
        read=_reader("ratings.csv", RATINGS_CSV, _movies_csv),
        rating_range=(0.5, 5),
        rating_step=0.5,
        dates=("1995-01-09", "2019-11-21"),
        expected=(162_541, 59_047, 25_000_095),
    ),
]
