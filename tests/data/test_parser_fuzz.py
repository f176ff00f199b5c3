"""Random and mutated lines through the u.data and Netflix parsers: every input either prepares, with
one rating per data line (per distinct pair when ``--duplicates`` resolves repeats), or fails with a
DataError; never another exception. Ids are drawn from a few values so that repeated pairs are common.

`make fuzz` runs the same properties with many more examples (DISTREC_FUZZ_EXAMPLES)."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distrec.data.duplicates import DUPLICATES
from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.data.textparse import newline_blocks
from distrec.errors import DataError

ODD_FIELDS = [
    "",
    "NA",
    "nan",
    "inf",
    "-",
    "+5",
    " 7",
    "1e3",
    "3.5",
    "0",
    "6",
    "0x1f",
    "1_0",
    "٣",
    "²",
    "99999999999999999999",
    "2005-02-30",
    "2005-9-6",
    "1:",
    "\r",
    "\x00",
]
FIELD = st.one_of(st.integers(-5, 3_000_000).map(str), st.sampled_from(ODD_FIELDS), st.text(max_size=5))
SETTINGS = settings(
    max_examples=int(os.environ.get("DISTREC_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _lines(valid: st.SearchStrategy[str], delimiter: str) -> st.SearchStrategy[list[bytes]]:
    """Mostly valid lines, some built from odd fields, some mutated by a character, some raw bytes."""
    mutated = st.tuples(valid, st.integers(0, 40), st.text(max_size=2)).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :])
    text = st.one_of(valid, valid, valid, mutated, st.lists(FIELD, max_size=5).map(delimiter.join))
    return st.lists(st.one_of(text.map(str.encode), st.binary(max_size=8)), max_size=12)


def _file(lines: list[bytes], crlf: bool, final_newline: bool) -> bytes:
    body = (b"\r\n" if crlf else b"\n").join(lines)
    return body + (b"\n" if final_newline and lines else b"")


def _prepare(dataset: str, name: str, data: bytes, duplicates: str) -> dict | None:
    """The summary, or None when the parser refused the input with a DataError."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(data)
        try:
            return prepare_dataset(
                PrepareConfig(
                    dataset=dataset,
                    out=f"{tmp}/out",
                    source=f"{tmp}/{name}",
                    splits=["random"],
                    verify_counts=False,
                    duplicates=duplicates,  # type: ignore[arg-type]
                )
            )
        except DataError:
            assert not (Path(tmp) / "out" / "_manifest.json").exists()
            return None


def _data_lines(data: bytes) -> list[bytes]:
    """The lines a strict reader must turn into ratings (trailing blank lines excepted)."""
    body = data.rstrip(b"\r\n \t")
    return body.split(b"\n") if body else []


def _expected_ratings(pairs: list[tuple[int, int]], duplicates: str) -> int:
    """Ratings a prepared file keeps: every line, or one per pair when repeats are resolved
    (and under ``refuse`` a file that prepared has no repeats)."""
    if duplicates == "refuse":
        assert len(set(pairs)) == len(pairs), "a repeated pair was accepted"
        return len(pairs)
    return len(set(pairs))


U_DATA_LINE = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31)).map(
    lambda t: "\t".join(map(str, t))
)


@SETTINGS
@given(_lines(U_DATA_LINE, "\t"), st.booleans(), st.booleans(), st.sampled_from(DUPLICATES))
def test_u_data_parses_or_raises_data_error(lines, crlf, final_newline, duplicates):
    data = _file(lines, crlf, final_newline)
    summary = _prepare("ml-100k", "u.data", data, duplicates)
    if summary is not None:
        pairs = [(int(f[0]), int(f[1])) for f in (line.split(b"\t") for line in _data_lines(data))]
        assert summary["ratings"] == _expected_ratings(pairs, duplicates)
        assert 1 <= summary["rating"]["min"] <= summary["rating"]["max"] <= 5


NETFLIX_LINE = st.one_of(
    st.sampled_from([1, 2, 17770]).map(lambda m: f"{m}:"),
    st.tuples(st.sampled_from([1, 6, 2_649_429]), st.integers(1, 5), st.dates()).map(
        lambda t: f"{t[0]},{t[1]},{t[2].isoformat()}"
    ),
)
HEADER = re.compile(rb"(\d{1,18}):\r?")


@SETTINGS
@given(_lines(NETFLIX_LINE, ","), st.booleans(), st.booleans(), st.sampled_from(DUPLICATES))
def test_netflix_parses_or_raises_data_error(lines, crlf, final_newline, duplicates):
    data = _file([b"1:"] + lines, crlf, final_newline)
    summary = _prepare("netflix", "combined_data_1.txt", data, duplicates)
    if summary is not None:
        pairs, movie = [], 0
        for line in _data_lines(data):
            if header := HEADER.fullmatch(line):
                movie = int(header[1])
            else:
                pairs.append((movie, int(line.split(b",")[0])))
        assert summary["ratings"] == _expected_ratings(pairs, duplicates)
        assert 1 <= summary["rating"]["min"] <= summary["rating"]["max"] <= 5


@SETTINGS
@given(
    st.lists(st.sampled_from([b"a", b"bc", b" ", b"\t", b"\r", b"\n", b"\n\n", b"xyz\n"]), max_size=40),
    st.integers(1, 9),
    st.booleans(),
)
def test_newline_blocks_keep_every_line_but_the_blank_tail(pieces, block_size, final_newline):
    data = b"".join(pieces)
    unterminated = bool(data.rsplit(b"\n", 1)[-1].strip())  # a last line with content and no newline
    try:
        blocks = list(newline_blocks(io.BytesIO(data), "f", block_size, final_newline=final_newline))
    except DataError as e:
        last_line = data.count(b"\n") + 1
        assert data == b"" or (
            final_newline and unterminated and str(e).startswith(f"f, line {last_line}: the file ends without a newline")
        )
        return
    assert not (final_newline and unterminated)
    for block in blocks:
        assert block.endswith(b"\n") and block.rstrip(b"\n").rsplit(b"\n", 1)[-1].strip()
    kept = b"".join(blocks)
    assert data.startswith(kept[:-1]) and not data[len(kept) - 1 :].strip()  # only blank lines or spaces dropped
