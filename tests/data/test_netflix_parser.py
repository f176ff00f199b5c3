"""Netflix Prize parser: Kaggle and original layouts, the probe split, titles, exact error lines."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path

import numpy as np
import pytest

from distrec.data.netflix import RATING_LINE, read_movie_blocks
from distrec.data.schema import TEST, TRAIN
from distrec.data.source import Source
from distrec.errors import DataError

# movie → [(customer, rating, date)]
RATINGS = {
    1: [(1488844, 3, "2005-09-06"), (822109, 5, "2005-05-13"), (885013, 4, "2005-10-19")],
    2: [(2059652, 4, "2005-09-05"), (1488844, 1, "2003-12-30")],
    30: [(885013, 2, "1999-11-11")],
    17770: [(822109, 5, "2005-12-31")],
}
PROBE = {1: [822109], 30: [885013], 17770: [822109]}
TITLES = "1,2003,Dinosaur Planet\n2,2004,Isle of Man TT 2004 Review\n30,NULL,Something's Gotta Give, Again\n4,1994,Never Rated\n"


def blocks(ratings: dict, newline: str = "\n") -> str:
    return "".join(f"{m}:{newline}" + "".join(f"{c},{r},{d}{newline}" for c, r, d in rows) for m, rows in ratings.items())


def write_kaggle(root: Path, newline: str = "\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    movies = list(RATINGS)
    (root / "combined_data_1.txt").write_text(blocks({m: RATINGS[m] for m in movies[:2]}, newline), newline="")
    (root / "combined_data_2.txt").write_text(blocks({m: RATINGS[m] for m in movies[2:]}, newline), newline="")
    (root / "probe.txt").write_text("".join(f"{m}:\n" + "".join(f"{c}\n" for c in cs) for m, cs in PROBE.items()))
    (root / "movie_titles.csv").write_bytes(TITLES.encode("latin-1"))
    return root


def unix(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp())


def check(got) -> None:
    rows = [(m, c, r, d) for m, rs in RATINGS.items() for c, r, d in rs]
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (4, 4, 7)
    assert got.items == [1, 2, 30, 17770]
    assert got.users == [1488844, 822109, 885013, 2059652]
    assert [got.items[i] for i in got.column("item")] == [m for m, *_ in rows]
    assert [got.users[u] for u in got.column("user")] == [c for _, c, *_ in rows]
    assert got.column("rating") == [float(r) for *_, r, _ in rows]
    assert got.column("ts") == [unix(d) for *_, d in rows]
    probe = {(m, c) for m, cs in PROBE.items() for c in cs}
    assert got.column("split_probe") == [TEST if (m, c) in probe else TRAIN for m, c, *_ in rows]
    assert got.summary["probe_rows_not_in_ratings"] == 0


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_kaggle_layout_with_probe_and_titles(tmp_path, prepare, newline):
    got = prepare("netflix", write_kaggle(tmp_path / "netflix", newline))
    check(got)
    assert got.summary["default_split"] == "probe"
    items = got.table("items.parquet").to_pydict()
    assert items["raw"] == [1, 2, 30]
    assert items["title"] == ["Dinosaur Planet", "Isle of Man TT 2004 Review", "Something's Gotta Give, Again"]
    assert items["year"] == [2003, 2004, None]


def test_original_per_movie_files_in_training_set_tar(tmp_path, prepare):
    files = tmp_path / "training_set"
    files.mkdir()
    for movie, rows in RATINGS.items():
        (files / f"mv_{movie:07d}.txt").write_text(blocks({movie: rows}))
    root = tmp_path / "nf"
    root.mkdir()
    with tarfile.open(root / "training_set.tar", "w") as tar:
        tar.add(files, arcname="training_set")
    got = prepare("netflix", root / "training_set.tar", splits=["random"])
    assert got.summary["rating_files"] == 4 and got.summary["ratings"] == 7
    assert got.items == [1, 2, 30, 17770]


def test_probe_split_needs_probe_file(tmp_path, fails):
    root = write_kaggle(tmp_path / "netflix")
    (root / "probe.txt").unlink()
    assert "the official split 'probe' needs probe.txt" in fails("netflix", root)


def test_line_numbers_across_blocks_match_a_line_by_line_reference(tmp_path):
    """Tiny blocks put headers, movies and blank tails on every kind of block boundary."""
    rng = np.random.default_rng(0)
    lines = []
    for movie in range(1, 40):
        lines.append(f"{movie}:")
        for _ in range(rng.integers(0, 5)):
            lines.append(f"{rng.integers(1, 99)},{rng.integers(1, 6)},2005-0{rng.integers(1, 10)}-1{rng.integers(0, 10)}")
    path = tmp_path / "combined_data_1.txt"
    path.write_text("\n".join(lines) + "\n\n\n")
    seen = []
    for block_size in (7, 23, 64, 1 << 20):
        seen.clear()
        for movie, table, line_of in read_movie_blocks(Source(str(path)), path.name, RATING_LINE, block_size=block_size):
            for row, user in enumerate(table.column("user").to_pylist()):
                line = line_of(row)
                header = max(k for k in range(line) if lines[k - 1].endswith(":"))
                assert lines[line - 1].startswith(f"{user},") and int(lines[header - 1][:-1]) == movie[row]
                seen.append(line)
        assert seen == [k + 1 for k, text in enumerate(lines) if not text.endswith(":")]


BAD = [
    (
        "1:\n10,3,2005-09-06\n2:\n10,5,2004-01-01\n11,5,2004-02-30\n",
        5,
        "field 'date': expected a valid calendar date, got '2004-02-30'",
    ),
    ("1:\n10,3,2005-09-06\n2:\n10,5,05/01/2004\n", 4, "field 'date': expected a date YYYY-MM-DD, got '05/01/2004'"),
    ("1:\n10,3,2005-09-06\n2:\n10,5\n", 4, "expected 3 fields (user, rating, date) separated by ',', got 2: '10,5'"),
    ("1:\n10,3,2005-09-06\nx7,3,2005-09-06\n", 3, "field 'user': expected an integer, got 'x7'"),
    ("1:\n10,3,2005-09-06\n2:\n\n10,3,2005-09-06\n", 4, "empty line"),
    ("1:\n10,3,2005-09-06\n2:x\n10,3,2005-09-06\n", 3, "expected 3 fields (user, rating, date) separated by ',', got 1: '2:x'"),
    ("10,3,2005-09-06\n1:\n", 1, "expected a 'MovieID:' line before the ratings, got '10,3,2005-09-06'"),
    ("1:\n10,3,2005-09-06\n2:\n10,3.5,2005-09-06\n", 4, "field 'rating': expected an integer, got '3.5'"),
    ("1:\n10,3,2005-09-06\n2:\n11,1,2005-09-06\n3:\n10,6,2005-09-06\n", 6, "rating 6 is outside Netflix Prize's scale (1 to 5)"),
]


@pytest.mark.parametrize("text,line,problem", BAD)
def test_bad_rating_lines_are_named_by_file_and_line(tmp_path, fails, text, line, problem):
    root = tmp_path / "netflix"
    root.mkdir()
    (root / "combined_data_1.txt").write_text(text)
    message = fails("netflix", root, splits=["random"])
    assert message.startswith(f"{root}/combined_data_1.txt, line {line}: ") and problem in message


def test_bad_probe_and_title_lines(tmp_path, fails):
    root = write_kaggle(tmp_path / "netflix")
    (root / "probe.txt").write_text("1:\n822109\n2:\nabc\n")
    assert fails("netflix", root) == f"{root}/probe.txt, line 4: field 'user': expected an integer, got 'abc'"
    root = write_kaggle(tmp_path / "netflix2")
    (root / "movie_titles.csv").write_text("1,2003,Dinosaur Planet\n2,twenty,Isle of Man\n")
    assert fails("netflix", root) == f"{root}/movie_titles.csv, line 2: YearOfRelease 'twenty' is neither a year nor NULL"


def test_probe_file_without_its_final_newline(tmp_path, fails, prepare):
    root = write_kaggle(tmp_path / "netflix")
    (root / "probe.txt").write_text("1:\n822109\n30:\n885013")  # cut short: the release ends each line
    message = fails("netflix", root, verify_counts=True)
    assert message.startswith(f"{root}/probe.txt, line 4: the file ends without a newline, so this last line may be cut short")
    assert prepare("netflix", root).summary["splits"]["probe"]["counts"]["test"] == 2  # --no-verify reads it as it is


def test_no_rating_files(tmp_path, fails):
    root = tmp_path / "netflix"
    root.mkdir()
    (root / "probe.txt").write_text("1:\n5\n")
    assert "no Netflix ratings found" in fails("netflix", root)


def test_error_in_a_later_block_comes_after_the_earlier_blocks(tmp_path):
    path = tmp_path / "combined_data_1.txt"
    path.write_text(blocks(RATINGS) + "5:\n10,3,2005-09-06\n11,3,2005-02-29\n")
    read = []
    with pytest.raises(DataError, match=rf"^{path}, line 14: field 'date': expected a valid calendar date"):
        for movie, _, _ in read_movie_blocks(Source(str(path)), path.name, RATING_LINE, block_size=16):
            read += movie.tolist()
    assert read == [m for m, rows in RATINGS.items() for _ in rows] + [5]
