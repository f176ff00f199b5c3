"""Bad input, every parser: the error names the file and the line (or key), and nothing is left behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from jobs.prepare import main as prepare_main

CSV_HEAD = "userId,movieId,rating,timestamp\n"
# dataset, file name, text, line named in the error, what the error says about it
BAD_TEXT = [
    # wrong number of fields
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t4\n", 2, "expected 4 fields (user, item, rating, ts) separated by '\\t', got 3"),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109::9\n", 2, "expected 4 fields (user, item, rating, ts) separated by '::'"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5\n", 3, "expected 4 fields (user, item, rating, ts) separated by ','"),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5\n", 2, "expected 4 fields"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06,1\n", 2, "expected 3 fields (user, rating, date) separated by ',', got 4"),
    # ids that are not numbers (an empty field or "NA" is not a missing value here)
    ("ml-100k", "u.data", "1\t2\t3\t881250949\nx1\t3\t4\t881250949\n", 2, "field 'user': expected an integer, got 'x1'"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\nNA\t3\t4\t881250949\n", 2, "field 'user': expected an integer, got 'NA'"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t\t4\t881250949\n", 2, "field 'item': expected an integer, got ''"),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::66a::3::978302109\n", 2, "field 'item': expected an integer, got '66a'"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,5.0,1147880044\n1,306,3.5,11478x\n", 3, "field 'ts': expected an integer, got '11478x'"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,five,1147880044\n", 2, "field 'rating': expected a number, got 'five'"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,4.0,99999999999999999999\n", 2, "field 'ts': expected an integer that fits in 64 bits"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n-,3,2005-09-06\n", 3, "field 'user': expected an integer, got '-'"),
    # ratings outside the dataset's scale
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t0\t881250949\n", 2, "rating 0 is outside MovieLens 100K's scale (1 to 5)"),
    ("ml-1m", "ratings.dat", "1::1193::5::978300760\n1::661::6::978302109\n", 2, "rating 6 is outside MovieLens 1M's scale (1 to 5)"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "1,296,nan,1147880044\n", 2, "rating nan is outside MovieLens 25M's scale (0.5 to 5)"),
    ("tmdb-small", "ratings_small.csv", CSV_HEAD + "1,31,2.5,1260759144\n1,32,0,1260759144\n", 3, "rating 0 is outside"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n2:\n10,0,2005-09-06\n", 4, "rating 0 is outside Netflix Prize's scale"),
    # blank lines count wherever they are, except at the end of the file
    ("ml-100k", "u.data", "\n1\t2\t3\t881250949", 1, "empty line"),
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n \n1\t3\t3\t881250949\n\n\n", 2, "expected 4 fields"),
    ("ml-25m", "ratings.csv", CSV_HEAD + "\n1,296,5.0,1147880044\n", 2, "empty line"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-06\n\n2:\n10,3,2005-09-06\n", 3, "empty line"),
    # a carriage return inside a line would make Arrow split it in two
    ("ml-100k", "u.data", "1\t2\t3\t881250949\n1\t3\t3\t881250949\r1\t4\t3\t881250949\n", 2, "a carriage return inside the line"),
    # dates
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-09-31\n", 2, "field 'date': expected a valid calendar date, got '2005-09-31'"),
    ("netflix", "combined_data_1.txt", "1:\n10,3,2005-9-6\n", 2, "field 'date': expected a date YYYY-MM-DD, got '2005-9-6'"),
]


@pytest.mark.parametrize("dataset,name,text,line,problem", BAD_TEXT, ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None)
def test_bad_line_is_named(tmp_path, fails, dataset, name, text, line, problem):
    root = tmp_path / "src"
    root.mkdir()
    (root / name).write_text(text)
    message = fails(dataset, root, splits=["random"])
    assert message.startswith(f"{root}/{name}, line {line}: ") and problem in message, message


@pytest.mark.parametrize(
    "dataset,name",
    [("ml-100k", "u.data"), ("ml-1m", "ratings.dat"), ("ml-25m", "ratings.csv"), ("tmdb-small", "ratings_small.csv"),
     ("netflix", "combined_data_1.txt")],
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
