"""Fast, strict parsing of delimited text files, block by block, with exact error lines.

The fast path hands each block (tens of MB, cut at a newline) to Arrow's multithreaded CSV
reader. When Arrow rejects a block, or a caller's range check fails, the block is re-scanned
line by line in Python to name the exact line and what was wrong with it, so the error path is
precise and the happy path never runs per-row Python.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from distrec.data.source import Source
from distrec.errors import DataError

__all__ = [
    "Field",
    "TextFormat",
    "newline_blocks",
    "parse_delimited",
    "parse_block",
    "parse_ahead",
    "text_lines",
    "csv_rows",
    "bad_line",
    "first_bad_row",
]

T = TypeVar("T")
BLOCK_SIZE = 32 << 20
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# What Arrow's converters accept (surrounding blanks allowed), so the re-scan blames the line Arrow stopped at.
_INT = re.compile(r"^[ \t]*-?[0-9]+[ \t]*$")
_FLOAT = re.compile(r"^[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*$")
_INT64 = range(-(1 << 63), 1 << 63)
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "date": pa.date32()}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Literal["int", "float", "str", "date"]


@dataclass(frozen=True)
class TextFormat:
    """One upstream line format: its delimiter, fields, optional header, and a human description."""

    delimiter: bytes
    fields: tuple[Field, ...]
    description: str
    header: tuple[str, ...] | None = None
    quoted: bool = False
    encoding: str = "utf-8"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def bad_line(label: str, line: int, message: str) -> DataError:
    return DataError(f"{label}, line {line}: {message}")


def newline_blocks(f: BinaryIO, label: str, block_size: int = BLOCK_SIZE, *, final_newline: bool = False) -> Iterator[bytes]:
    """Yield blocks of about ``block_size`` bytes, each ending with a newline after a non-blank line.

    Blank lines at a block's end are held back for the next block, so only those at the end of
    the file are dropped; anywhere else they reach the parser, which rejects them.
    ``final_newline``: a last line without its newline (a cut-short download, a line a tool
    truncated) is an error naming it, since every upstream file ends in one; otherwise the line
    is read as if the newline were there."""
    rest = b""
    seen_any = False
    lines = 0  # newlines in the blocks yielded so far (counted only for the error)
    while data := f.read(block_size):
        seen_any = True
        cut = _content_end(rest, data)
        if cut == 0:
            rest += data
            continue
        block = b"".join((rest, memoryview(data)[:cut]))  # one copy of the block, not two
        if final_newline:
            lines += block.count(b"\n")
        yield block
        rest = data[cut:]
    if not seen_any:
        raise DataError(f"{label}: empty file")
    if rest.strip():
        if final_newline:
            raise bad_line(
                label,
                lines + rest.count(b"\n") + 1,
                "the file ends without a newline, so this last line may be cut short (the upstream files "
                "end in one); pass --no-verify to read it as it is",
            )
        yield rest + b"\n"


def _content_end(rest: bytes, data: bytes) -> int:
    """Index in ``data`` just past the newline that ends its last non-blank line, 0 if none
    (``rest``, the unfinished line before ``data``, begins ``data``'s first line)."""
    end = data.rfind(b"\n") + 1
    while end:
        start = data.rfind(b"\n", 0, end - 1) + 1
        if data[start:end].strip() or (start == 0 and rest.strip()):
            return end
        end = start
    return 0


def parse_delimited(
    f: BinaryIO, label: str, fmt: TextFormat, *, block_size: int = BLOCK_SIZE, final_newline: bool = False
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first line number, table)`` per block; row ``r`` of a table is line ``first + r``.
    ``final_newline``: see ``newline_blocks``."""

    def jobs() -> Iterator[tuple[Callable[[], pa.Table], int]]:
        line = 1  # of the block's first line
        for block in newline_blocks(f, label, block_size, final_newline=final_newline):
            if line == 1 and fmt.header is not None:
                head, _, block = block.partition(b"\n")
                _check_header(label, fmt, head)
                line = 2
            lines = block.count(b"\n")
            if lines:
                yield partial(parse_block, label, fmt, block, lambda k, line=line: line + k, lines=lines), line
            line += lines

    for table, line in parse_ahead(jobs()):
        yield line, table


def parse_ahead(jobs: Iterable[tuple[Callable[[], pa.Table], T]]) -> Iterator[tuple[pa.Table, T]]:
    """``(parse(), tag)`` for each ``(parse, tag)``, with the next parse already running in a
    background thread while the caller works on this result.

    Arrow releases the GIL while it parses, so the Python work around each block (finding lines,
    encoding ids, writing shards) no longer leaves a core idle. Results and parse errors come in
    block order; one block is read ahead of the caller."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        ahead: tuple[Future[pa.Table], T] | None = None
        for parse, tag in jobs:
            submitted = (pool.submit(parse), tag)
            if ahead is not None:
                yield ahead[0].result(), ahead[1]
            ahead = submitted
        if ahead is not None:
            yield ahead[0].result(), ahead[1]
    finally:
        # Not joined: a reader abandoned after an error (its generator kept alive by the error's
        # traceback) is closed by the garbage collector on whatever thread runs it, once even
        # inside threading's own lock while a thread started, where a join deadlocked. A parse
        # still running only reads its block; its thread ends when that does.
        pool.shutdown(wait=False, cancel_futures=True)


def _check_header(label: str, fmt: TextFormat, head: bytes) -> None:
    text = head.decode(fmt.encoding, errors="replace").strip().lstrip("\ufeff")
    delim = fmt.delimiter.decode()
    got = tuple(next(csv.reader([text], delimiter=delim))) if fmt.quoted else tuple(text.split(delim))
    if got != fmt.header:
        raise bad_line(label, 1, f"expected the header {delim.join(fmt.header or ())!r}, got {text!r}")


def parse_block(label: str, fmt: TextFormat, block: bytes, line_of: Callable[[int], int], *, lines: int) -> pa.Table:
    """Parse ``block`` (``lines`` whole lines, each ending in a newline) in ``fmt``; its ``k``-th
    line is line ``line_of(k)`` of the file. Callers that cut other lines out of a block (Netflix's
    ``MovieID:`` headers) pass the mapping back to the original numbering, so errors still name
    the exact line."""
    delimiter = fmt.delimiter
    if len(delimiter) > 1:  # Arrow takes one character; "::" (MovieLens 1M/10M) becomes \x1f
        block = block.replace(delimiter, b"\x1f")
        delimiter = b"\x1f"
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=fmt.names, encoding=fmt.encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter.decode(),
                quote_char='"' if fmt.quoted else False,
                ignore_empty_lines=False,
                newlines_in_values=fmt.quoted,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: _ARROW_TYPES[f.kind] for f in fmt.fields},
                null_values=[],  # Arrow would read "", "NA", "null" in a numeric column as null
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        _diagnose(label, fmt, line_of, block if len(fmt.delimiter) == 1 else block.replace(b"\x1f", fmt.delimiter))
        raise DataError(f"{label}, lines {line_of(0)}+: {e}") from None
    if table.num_rows != lines and not fmt.quoted:  # Arrow also ends a row at a lone \r
        for offset, raw in enumerate(block.split(b"\n")):
            if b"\r" in raw.rstrip(b"\r"):
                raise bad_line(label, line_of(offset), "a carriage return inside the line")
        raise DataError(f"{label}, lines {line_of(0)}+: read {table.num_rows} rows from {lines} lines")
    return table


def _diagnose(label: str, fmt: TextFormat, line_of: Callable[[int], int], block: bytes) -> None:
    """Raise the error for the first bad line of ``block`` (used only after the fast path failed)."""
    delim = fmt.delimiter.decode()
    expected = f"{len(fmt.fields)} fields ({', '.join(fmt.names)}) separated by {delim!r}"
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block's final newline
    for offset, raw in enumerate(lines):
        lineno = line_of(offset)
        try:
            text = raw.decode(fmt.encoding).rstrip("\r")
        except UnicodeDecodeError as e:
            raise bad_line(label, lineno, f"not valid {fmt.encoding} text ({e.reason})") from None
        parts = next(csv.reader([text], delimiter=delim)) if fmt.quoted else text.split(delim)
        if not text.strip():
            raise bad_line(label, lineno, f"empty line; expected {expected}")
        if len(parts) != len(fmt.fields):
            raise bad_line(label, lineno, f"expected {expected}, got {len(parts)}: {text[:200]!r}")
        for field, value in zip(fmt.fields, parts):
            problem = _field_problem(field.kind, value)
            if problem:
                raise bad_line(label, lineno, f"field {field.name!r}: {problem}, got {value[:50]!r}")


def _field_problem(kind: str, value: str) -> str | None:
    if kind == "int":
        if not _INT.match(value):
            return "expected an integer"
        if int(value) not in _INT64:
            return "expected an integer that fits in 64 bits"
    elif kind == "float":
        if not _FLOAT.match(value):
            return "expected a number"
        if not math.isfinite(float(value)):
            return "expected a finite number"
    elif kind == "date":
        value = value.strip(" \t")
        if not _DATE.match(value):
            return "expected a date YYYY-MM-DD"
        try:
            np.datetime64(value, "D")
        except ValueError:
            return "expected a valid calendar date"
        if value.startswith("0000"):  # numpy has a year 0, Arrow does not
            return "expected a valid calendar date"
    return None


def first_bad_row(mask: np.ndarray) -> int | None:
    """Index of the first True in a boolean mask, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


# -- small metadata files, read line by line ----------------------------------------------------
def text_lines(source: Source, name: str, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines of ``name``, line endings stripped."""
    label = source.label(name)
    with source.open(name) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise bad_line(label, lineno, f"not valid {encoding} text ({e.reason})") from None
            if line.strip():
                yield lineno, line


def csv_rows(source: Source, name: str, encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-empty records of a quoted CSV file, header included.

    A record with a quoted newline spans lines; its number is the line it ends on."""
    label = source.label(name)
    with source.open(name) as f:
        reader = csv.reader(io.TextIOWrapper(f, encoding=encoding, newline=""))
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except UnicodeDecodeError as e:
            raise DataError(f"{label}, after line {reader.line_num}: not valid {encoding} text ({e.reason})") from None
        except csv.Error as e:
            raise bad_line(label, reader.line_num, f"not valid CSV ({e})") from None
