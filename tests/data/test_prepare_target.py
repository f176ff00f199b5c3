"""Where ``jobs/prepare.py`` may write, and what a failed re-prepare leaves: real directories of
user files, the real job in a subprocess.

- a non-empty ``--out`` that distrec did not write is refused (exit 2, a few of its files named)
  and left exactly as it was; ``--overwrite`` writes beside the files and keeps them;
- ``--out`` equal to ``--source``, or either inside the other, is refused before anything is read;
- a re-prepare that fails (bad input, counts that do not match, a write that fails) leaves the
  previous dataset whole and readable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distrec.data.dataset import InteractionDataset
from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.errors import DataError
from distrec.storage import DirectoryWriter, StoredDirectory
from distrec.storage.uri import join
from tests.data.test_movielens_parser import write_ml100k
from tests.faults import REPO, python_env

OVERLAP = "are the same place, or one is inside the other"


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/prepare.py", "ml-100k", "--quiet", *args],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def whole(uri: str) -> dict[str, str]:
    """The dataset opened with every byte checked; path → sha256 of what its manifest lists."""
    dataset = InteractionDataset(uri, verify="sha256")
    for path in dataset.store.manifest.paths():
        dataset.store.read_table(path)
    return {f.path: f.sha256 for f in dataset.store.manifest.files}


def test_prepare_into_a_directory_of_user_files_is_refused_and_deletes_nothing(tmp_path):
    """The reported repro: D/notes.txt and D/sub/thesis.tex were deleted by a successful run."""
    src = write_ml100k(tmp_path / "src")
    out = tmp_path / "D"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("x\n")
    (out / "sub" / "thesis.tex").write_text("y\n")
    theirs = tree(out)
    refused = prepare("--source", str(src), "--out", str(out), "--split", "u1", "--no-verify")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "the directory is not empty and distrec did not write it" in refused.stderr
    assert "it holds notes.txt, sub/" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert tree(out) == theirs  # nothing deleted, nothing added

    done = prepare("--source", str(src), "--out", str(out), "--split", "u1", "--no-verify", "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    first = whole(str(out))
    again = prepare("--source", str(src), "--out", str(out), "--split", "u1", "--no-verify")  # a distrec directory now
    assert again.returncode == 0, again.stderr[-2000:]
    assert whole(str(out)) == first  # the same content
    after = tree(out)
    assert {p: after[p] for p in theirs} == theirs
    folder = StoredDirectory(str(out)).manifest.folder
    assert set(after) == set(theirs) | {"_manifest.json"} | {f"{folder}/{p}" for p in first}


def test_out_equal_to_source_is_refused_and_the_source_kept(tmp_path):
    src = write_ml100k(tmp_path / "X")
    before = tree(src)
    refused = prepare("--source", str(src), "--out", str(src), "--split", "u1", "--no-verify", "--overwrite")
    assert refused.returncode == 2 and OVERLAP in refused.stderr, refused.stderr[-2000:]
    assert tree(src) == before


@pytest.mark.parametrize(
    "source, out",
    [
        ("{tmp}/X", "{tmp}/X/"),  # trailing slash
        ("{tmp}/X", "file://{tmp}/X"),
        ("{tmp}/X", "{tmp}/X/sub/../"),
        ("{tmp}/X", "{tmp}/X/prepared"),  # out inside source
        ("{tmp}/X/ml-100k", "{tmp}/X"),  # source inside out
        ("{tmp}/link", "{tmp}/X"),  # a symlink to out
        ("{tmp}/X", "X/prepared"),  # relative to the working directory
    ],
)
def test_out_and_source_that_overlap_are_refused_before_anything_is_read(tmp_path, monkeypatch, source, out):
    write_ml100k(tmp_path / "X" / "ml-100k")
    (tmp_path / "link").symlink_to(tmp_path / "X")
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path / "X")
    config = PrepareConfig(
        dataset="ml-100k", source=source.format(tmp=tmp_path), out=out.format(tmp=tmp_path), overwrite=True, verify_counts=False
    )
    with pytest.raises(DataError, match=OVERLAP):
        prepare_dataset(config)
    assert tree(tmp_path / "X") == before


@pytest.mark.parametrize("out", ["{s3}/X", "{s3}/X/prepared", "{s3a}"])
def test_overlapping_s3_uris_are_refused(s3_uri, out):
    source = join(s3_uri, "X")
    config = PrepareConfig(
        dataset="ml-100k", source=source, out=out.format(s3=s3_uri, s3a=s3_uri.replace("s3://", "s3a://")), verify_counts=False
    )
    with pytest.raises(DataError, match=OVERLAP):
        prepare_dataset(config)


def test_neighbours_are_not_overlaps(tmp_path):
    src = write_ml100k(tmp_path / "X")
    prepare_dataset(PrepareConfig(dataset="ml-100k", source=str(src), out=f"{src}-prepared", splits=["u1"], verify_counts=False))
    assert whole(f"{src}-prepared")


def _bad_line(src: Path) -> None:
    lines = (src / "u.data").read_text().splitlines(keepends=True)
    lines.insert(2, "196\tabc\t3\t881250949\n")
    (src / "u.data").write_text("".join(lines))


@pytest.mark.parametrize("failure", ["bad line mid-file", "counts after the shards are written"])
def test_a_failed_reprepare_keeps_the_previous_dataset(tmp_path, failure):
    src, out = write_ml100k(tmp_path / "src"), tmp_path / "D"
    good = ("--out", str(out), "--split", "u1", "--rows-per-shard", "2")
    assert prepare("--source", str(src), *good, "--no-verify").returncode == 0
    old, before = whole(str(out)), tree(out)
    if failure == "bad line mid-file":
        _bad_line(src)
        failed = prepare("--source", str(src), *good, "--no-verify")
    else:  # without --no-verify, the 5 ratings are not ML-100K's 100,000: refused after 2 shards
        failed = prepare("--source", str(src), *good)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert ("u.data, line 3" if failure == "bad line mid-file" else "--no-verify") in failed.stderr
    assert tree(out) == before and whole(str(out)) == old


def test_a_reprepare_whose_write_fails_keeps_the_previous_dataset(tmp_path, monkeypatch):
    src, out = write_ml100k(tmp_path / "src"), str(tmp_path / "D")
    config = dict(dataset="ml-100k", source=str(src), out=out, splits=["u1"], rows_per_shard=2, verify_counts=False)
    prepare_dataset(PrepareConfig(**config))
    old, before = whole(out), tree(tmp_path / "D")
    write_bytes, count = DirectoryWriter.write_bytes, 0

    def fail_on_the_third(self, path, data, *, rows):  # the disk fills up at the third file
        nonlocal count
        count += 1
        if count == 3:
            raise DataError(f"{path}: cannot write (OSError: [Errno 28] No space left on device)")
        return write_bytes(self, path, data, rows=rows)

    monkeypatch.setattr(DirectoryWriter, "write_bytes", fail_on_the_third)
    with pytest.raises(DataError, match="No space left on device"):
        prepare_dataset(PrepareConfig(**config))
    assert count == 3 and tree(tmp_path / "D") == before and whole(out) == old  # the failed commit's folder is gone too
