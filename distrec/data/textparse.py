"""Fast, strict parsing of delimited text files, block by block, with exact error lines.

The fast path hands each block (tens of MB, cut at a newline) to Arrow's multithreaded CSV
reader. When Arrow rejects a block, or a caller's range check fails, the block is re-scanned
line by line in Python to name the exact line and what was wrong with it, so the error path is
precise and the happy path never runs per-row Python.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from distrec.storage.manifest import DataError

__all__ = ["Field", "TextFormat", "read_blocks", "parse_delimited", "bad_line", "first_bad_row"]

BLOCK_SIZE = 32 << 20
_DATE = re.compile(rb"^\d{4}-\d{2}-\d{2}$")
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


def read_blocks(f: BinaryIO, label: str, block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, bytes]]:
    """Yield ``(number of the block's first line, bytes)`` with every block ending at a newline."""
    line = 1
    rest = b""
    seen_any = False
    while True:
        data = f.read(block_size)
        if not data:
            break
        seen_any = True
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        block, rest = data[:cut], data[cut:]
        yield line, block
        line += block.count(b"\n")
    if not seen_any:
        raise DataError(f"{label}: empty file")
    if rest.strip():
        yield line, rest + b"\n"


def parse_delimited(
    f: BinaryIO, label: str, fmt: TextFormat, *, block_size: int = BLOCK_SIZE
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first line number, table)`` per block; row ``r`` of a table is line ``first + r``."""
    first_block = True
    for line, block in read_blocks(f, label, block_size):
        if first_block:
            first_block = False
            if fmt.header is not None:
                head, _, block = block.partition(b"\n")
                _check_header(label, fmt, head)
                line += 1
                if not block.strip():
                    continue
        block = _strip_trailing_blank_lines(block)
        if not block:
            continue
        yield line, _parse_block(label, fmt, line, block)


def _check_header(label: str, fmt: TextFormat, head: bytes) -> None:
    text = head.decode(fmt.encoding, errors="replace").strip().lstrip("\ufeff")
    delim = fmt.delimiter.decode()
    got = tuple(next(csv.reader([text], delimiter=delim))) if fmt.quoted else tuple(text.split(delim))
    if got != fmt.header:
        raise bad_line(label, 1, f"expected the header {delim.join(fmt.header or ())!r}, got {text!r}")


def _strip_trailing_blank_lines(block: bytes) -> bytes:
    stripped = block.rstrip(b"\r\n \t")
    return stripped + b"\n" if stripped else b""


def _parse_block(label: str, fmt: TextFormat, line: int, block: bytes) -> pa.Table:
    delimiter = fmt.delimiter
    if len(delimiter) > 1:  # Arrow takes one character; "::" (MovieLens 1M/10M) becomes \x1f
        block = block.replace(delimiter, b"\x1f")
        delimiter = b"\x1f"
    try:
        return pacsv.read_csv(
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
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        _diagnose(label, fmt, line, block if len(fmt.delimiter) == 1 else block.replace(b"\x1f", fmt.delimiter))
        raise DataError(f"{label}, lines {line}+: {e}") from None


def _diagnose(label: str, fmt: TextFormat, first_line: int, block: bytes) -> None:
    """Raise the error for the first bad line of ``block`` (used only after the fast path failed)."""
    delim = fmt.delimiter.decode()
    expected = f"{len(fmt.fields)} fields ({', '.join(fmt.names)}) separated by {delim!r}"
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block's final newline
    for offset, raw in enumerate(lines):
        lineno = first_line + offset
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
        try:
            int(value)
        except ValueError:
            return "expected an integer"
    elif kind == "float":
        try:
            if not math.isfinite(float(value)):
                return "expected a finite number"
        except ValueError:
            return "expected a number"
    elif kind == "date":
        if not _DATE.match(value.encode()):
            return "expected a date YYYY-MM-DD"
        try:
            np.datetime64(value, "D")
        except ValueError:
            return "expected a valid calendar date"
    return None


def first_bad_row(mask: np.ndarray) -> int | None:
    """Index of the first True in a boolean mask, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None
