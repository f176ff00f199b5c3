"""Bad input, every parser: the error names the file and the line (or key), and nothing is left behind."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from distrec.storage import MANIFEST
from jobs.prepare import main as prepare_main

CSV_HEAD = "userId,movieId,rating,timestamp\n"
# dataset, file name, text, line named in the error, what the error says about it
BAD_TEXT = [
    # wrong number of fields
    (
        "ml-100k",
        "u.data",
        "1\t2\t3\t881250949\n1\t3\t4\n",
        2,
        "expected 4 fields (user, item, rating, ts) separated by '\\t', got 3",
    ),
    (
        "ml-1m",
        "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109::9\n",
        2,
        "expected 4 fields (user, item, rating, ts) separated by '::'",
    ),
    (
        "ml-25m",
        "ratings.csv",
        CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5\n",
        3,
        "expected 4 fields (user, item, rating, ts) separated by ','",
    ),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5\n", 2, "expected 4 fields"),
    (
        "netflix",
        "combined_data_1.txt",
        "1:\n10,3,2005-09-06,1\n",
        2,
        "expected 3 fields (user, rating, date) separated by ',', got 4",
    ),
    # ids that are not numbers (an empty field or "NA" is not a missing value here)
    ("ml-100k", "u.data", "1\t2\t3\t881250949\nx1\t3\t4\t881250949\n", 2, "field 'user': expected an integer, got 'x1'"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\nNA\t3\t4\t881250949\n", 2, "field 'user': expected an integer, got 'NA'"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t\t4\t881250949\n", 2, "field 'item': expected an integer, got ''"),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::66a::3::978302109\n", 2, "field 'item': expected an integer, got '66a'"),
    (
        "ml-25m",
        "ratings.csv",
        CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5,11478x\n",
        3,
        "field 'ts': expected an integer, got '11478x'",
    ),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,five,1147880044\n", 2, "field 'rating': expected a number, got 'five'"),
    (
        "ml-25m",
        "ratings.csv",
        CSV_HEAD + "1,296,4.0,99999999999999999999\n",
        2,
        "field 'ts': expected an integer that fits in 64 bits",
    ),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n-,3,2005-09-06\n", 3, "field 'user': expected an integer, got '-'"),
    # ratings outside the dataset's scale
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t0\t881250949\n", 2, "rating 0 is outside MovieLens 100K's scale (1 to 5)"),
    (
        "ml-1m",
        "ratings.dat",
        "1::1193::5::978300760\n1::661::6::978302109\n",
        2,
        "rating 6 is outside MovieLens 1M's scale (1 to 5)",
    ),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,nan,1147880044\n", 2, "rating nan is outside MovieLens 25M's scale (0.5 to 5)"),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5,1260759144\n1,32,0,1260759144\n", 3, "rating 0 is outside"),
    (
        "netflix",
        "combined_data_1.txt",
        "1:\n10,3,2005-09-06\n2:\n10,0,2005-09-06\n",
        4,
        "rating 0 is outside Netflix Prize's scale",
    ),
    # ratings between the scale's steps: whole stars (100K, 1M, Netflix), half stars (10M on, the Movies Dataset)
    (
        "ml-100k",
        "u.data",
        "1\t2\t3\t881250949\n1\t3\t4.5\t881250949\n",
        2,
        "rating 4.5 is off MovieLens 100K's scale, which goes from 1 to 5 in steps of 1",
    ),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::661::3.5::978302109\n", 2, "rating 3.5 is off MovieLens 1M's scale"),
    (
        "ml-25m",
        "ratings.csv",
        CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.25,1147880044\n",
        3,
        "rating 3.25 is off MovieLens 25M's scale, which goes from 0.5 to 5 in steps of 0.5",
    ),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.75,1260759144\n", 2, "rating 2.75 is off"),
    (
        "netflix",
        "combined_data_1.txt",
        "1:\n10,3,2005-09-06\n11,4.5,2005-09-06\n",
        3,
        "field 'rating': expected an integer, got '4.5'",
    ),
    # blank lines count wherever they are, except at the end of the file
    ("ml-100k", "u.data", "\n1\t2\t3\t881250949", 1, "empty line"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n \n1\t3\t3\t881250949\n\n\n", 2, "expected 4 fields"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "\n1,296,5.0,1147880044\n", 2, "empty line"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n\n2:\n10,3,2005-09-06\n", 3, "empty line"),
    # a carriage return inside a line would make Arrow split it in two
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t3\t881250949\r1\t4\t3\t881250949\n", 2, "a carriage return inside the line"),
    # dates
    (
        "netflix",
        "combined_data_1.txt",
        "1:\n10,3,2005-09-31\n",
        2,
        "field 'date': expected a valid calendar date, got '2005-09-31'",
    ),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-9-6\n", 2, "field 'date': expected a date YYYY-MM-DD, got '2005-9-6'"),
]


@pytest.mark.parametrize(
    "dataset,name,text,line,problem", BAD_TEXT, ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None
)
def test_bad_line_is_named(tmp_path, fails, dataset, name, text, line, problem):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_text(text)
    message = fails(dataset, root, splits=["random"])
    assert message.startswith(f"{root}/{name}, line {line}: ") and problem in message, message


@pytest.mark.parametrize(
    "dataset,name",
    [
        ("ml-100k", "u.data"),
        ("ml-1m", "ratings.dat"),
        ("ml-25m", "ratings.csv"),
        ("tmdb-small", "ratings_small.csv"),
        ("netflix", "combined_data_1.txt"),
    ],
)
def test_empty_file(tmp_path, fails, dataset, name):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_bytes(b"")
    assert fails(dataset, root, splits=["random"]) == f"{root}/{name}: empty file"


@pytest.mark.parametrize("dataset,name", [("douban", "training_test_dataset.mat"), ("infae", "total_data.hdf5")])
def test_empty_hdf5_file(tmp_path, fails, dataset, name):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_bytes(b"")
    (root / "index.npz").write_bytes(b"")
    assert fails(dataset, root).startswith(f"{root}/{name}: not a readable")


def _ml100k_zip(path: Path) -> bytes:
    rows = "".join(f"{u}\t{i}\t{(u * i) % 5 + 1}\t{881250949 + u * i}\n" for u in range(1, 60) for i in range(1, 60))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-100k/u.data", rows)
    return path.read_bytes()


def test_truncated_zip_archive(tmp_path, fails):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(_ml100k_zip(archive)[:-200])  # the download stopped early: no central directory
    message = fails("ml-100k", archive, splits=["random"])
    assert message.startswith(f"{archive}: not a readable zip archive (truncated or corrupt download?)")


def test_corrupt_member_of_a_zip_archive(tmp_path, fails):
    archive = tmp_path / "ml-100k.zip"
    data = bytearray(_ml100k_zip(archive))
    data[200:240] = bytes(40)  # damage the compressed u.data, keep the directory intact
    archive.write_bytes(bytes(data))
    message = fails("ml-100k", archive, splits=["random"])
    assert message.startswith(f"{archive}!ml-100k/u.data: archive is truncated or corrupt")


@pytest.mark.parametrize("uri", ["nosuch://bucket/ml-100k", "{tmp}/does/not/exist"])
def test_unreadable_source_uri(tmp_path, fails, uri):
    uri = uri.format(tmp=tmp_path)
    assert fails("ml-100k", uri).startswith(f"{uri}: ")


def test_missing_file_names_what_was_found(tmp_path, fails):
    root = tmp_path / "src"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n")
    assert "no file named 'u.data' (found: ratings.dat)" in fails("ml-100k", root, splits=["random"])


def test_unknown_dataset_via_the_job(tmp_path, capsys):
    assert prepare_main(["ml-100", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'ml-100' (did you mean 'ml-100k'?)" in err and "netflix" in err and "douban" in err
    assert not (tmp_path / "out").exists()


def test_bad_source_via_the_job(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "u.data").write_text("1\t2\t3\t881250949\n1\t3\t4\n")
    argv = ["ml-100k", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--split", "random", "--quiet"]
    assert prepare_main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}/src/u.data, line 2: expected 4 fields")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dataset,hint", [("netflix", "netflix-prize-data"), ("tmdb", "rounakbanik/the-movies-dataset")])
def test_dataset_without_a_download_url_says_where_to_get_it(tmp_path, capsys, dataset, hint):
    assert prepare_main([dataset, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "there is no public download URL" in err and hint in err and "--source" in err


# -- repeated (user, item) pairs --------------------------------------------------------------
# dataset, file, text, the repeat's line, the first occurrence's line, raw user and item
REPEATS = [
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t4\t881250950\n1\t2\t5\t881250951\n", 3, 1, 1, 2),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n2::1193::4::978298413\n2::1193::3::978298414\n", 3, 2, 2, 1193),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5,1147868817\n1,296,4.0,1147880045\n", 4, 2, 1, 296),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5,1260759144\n1,31,2.5,1260759144\n", 3, 2, 1, 31),
    # movie 1 comes back after movie 2: customer 10 rated it on line 2 and line 6
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n2:\n10,3,2005-09-06\n1:\n10,4,2005-09-07\n", 6, 2, 10, 1),
]


@pytest.mark.parametrize("dataset,name,text,line,first,user,item", REPEATS, ids=[r[0] for r in REPEATS])
def test_repeated_pair_names_both_lines(tmp_path, fails, dataset, name, text, line, first, user, item):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_text(text)
    message = fails(dataset, root, splits=["random"])
    assert message.startswith(
        f"{root}/{name}, line {line}: user {user}, item {item} is rated again (first at {root}/{name}, line {first}); "
    ), message
    assert "--duplicates keep-last or --duplicates mean" in message


def test_repeated_pair_across_two_netflix_files(tmp_path, fails):
    root = tmp_path / "src"
    root.mkdir()
    (root / "combined_data_1.txt").write_text("1:\n10,3,2005-09-06\n11,4,2005-09-06\n")
    (root / "combined_data_2.txt").write_text("2:\n12,3,2005-09-06\n1:\n11,5,2005-10-01\n")
    message = fails("netflix", root, splits=["random"])
    assert message.startswith(
        f"{root}/combined_data_2.txt, line 4: user 11, item 1 is rated again (first at {root}/combined_data_1.txt, line 3)"
    )


def test_repeated_pair_via_the_job(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "u.data").write_text("1\t2\t3\t881250949\n1\t2\t4\t881250950\n")
    argv = ["ml-100k", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--split", "random", "--quiet"]
    assert prepare_main(argv) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {tmp_path}/src/u.data, line 2: user 1, item 2 is rated again (first at {tmp_path}/src/u.data, line 1)"
    )
    assert not (tmp_path / "out").exists()
    assert prepare_main([*argv, "--duplicates", "keep-last", "--no-verify"]) == 0  # the documented way to resolve them
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())["meta"]
    assert (manifest["ratings"], manifest["duplicates"], manifest["duplicate_rows_removed"]) == (1, "keep-last", 1)


# -- checks made with the counts (--no-verify skips them) ---------------------------------------
NEWLINE = (
    "the file ends without a newline, so this last line may be cut short (the upstream files end in one); "
    "pass --no-verify to read it as it is"
)
# dataset, file, text without its final newline (the last line is well formed), the last line's number
NO_FINAL_NEWLINE = [
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n12\t203\t3\t879959583", 2),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109", 2),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5,1147868817", 3),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5,1260759144", 2),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n\n\n2:\n11,4,2005-09-07", 6),
]


@pytest.mark.parametrize("dataset,name,text,line", NO_FINAL_NEWLINE, ids=[r[0] for r in NO_FINAL_NEWLINE])
def test_missing_final_newline_is_refused_unless_no_verify(tmp_path, fails, prepare, dataset, name, text, line):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_text(text)
    assert fails(dataset, root, splits=["random"], verify_counts=True) == f"{root}/{name}, line {line}: {NEWLINE}"
    if dataset != "netflix":  # (its blank lines are errors of their own)
        assert prepare(dataset, root, splits=["random"]).summary["ratings"] == line - (name.endswith(".csv"))


def test_truncated_last_line_via_the_job(tmp_path, capsys):
    """The hostile tester's file: the last line cut after two digits of its time."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "u.data").write_text("196\t242\t3\t881250949\n12\t203\t3\t87")
    argv = ["ml-100k", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--split", "random", "--quiet"]
    assert prepare_main(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}/src/u.data, line 2: the file ends without a newline")
    assert not (tmp_path / "out").exists()


# dataset, file, text with one time outside the release's dates, its line, what the error says
OUT_OF_DATES = [
    (
        "ml-100k",
        "u.data",
        "1\t2\t3\t881250949\n12\t203\t3\t87\n",
        2,
        "time 87 (1970-01-01 00:01:27 UTC) is outside MovieLens 100K's dates (1997-09-19 to 1998-04-22)",
    ),
    (
        "ml-1m",
        "ratings.dat",
        "1::1193::5::978300760\n1::661::3::1600000000\n",
        2,
        "is outside MovieLens 1M's dates (2000-04-25 to 2003-02-28)",
    ),
    (
        "ml-25m",
        "ratings.csv",
        CSV_HEAD + "1,296,5.0,700000000\n",
        2,
        "time 700000000 (1992-03-07 20:26:40 UTC) is outside MovieLens 25M's dates",
    ),
    (
        "tmdb-small",
        "ratings_small.csv",
        CSV_HEAD + "1,31,2.5,1260759144\n1,32,2.5,1500000000\n",
        3,
        "is outside The Movies Dataset, ratings_small.csv's dates",
    ),
    (
        "netflix",
        "combined_data_1.txt",
        "1:\n10,3,2005-09-06\n2:\n11,4,2006-01-15\n",
        4,
        "(2006-01-15 00:00:00 UTC) is outside Netflix Prize's dates (1998-10-01 to 2005-12-31)",
    ),
]


@pytest.mark.parametrize("dataset,name,text,line,problem", OUT_OF_DATES, ids=[r[0] for r in OUT_OF_DATES])
def test_time_outside_the_release_dates_is_refused_unless_no_verify(tmp_path, fails, prepare, dataset, name, text, line, problem):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_text(text)
    message = fails(dataset, root, splits=["random"], verify_counts=True)
    assert message.startswith(f"{root}/{name}, line {line}: ") and problem in message and "--no-verify" in message, message
    prepare(dataset, root, splits=["random"])  # accepted as it is


def test_release_dates_allow_a_day_either_side(tmp_path, fails):
    """Times inside the dates (a day's margin for time zones) pass, so the count check is what fails."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "combined_data_1.txt").write_text("1:\n10,3,1998-09-30\n11,4,2006-01-01\n")
    assert fails("netflix", root, splits=["random"], verify_counts=True).startswith("netflix: parsed 2 users, 1 items, 2 ratings")
