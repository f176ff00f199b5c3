"""Helpers for the parser tests: run a preparation into tmp_path and read back what it wrote."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.storage import MANIFEST, StoredDirectory


@dataclass
class Prepared:
    summary: dict[str, Any]
    rows: pa.Table  # all shards, in file order
    users: list  # raw user id of each dense index
    items: list
    directory: StoredDirectory

    def column(self, name: str) -> list:
        return self.rows.column(name).to_pylist()

    def table(self, path: str) -> pa.Table:
        return self.directory.read_table(path)


@pytest.fixture
def prepare(tmp_path: Path) -> Callable[..., Prepared]:
    """``prepare(dataset, source, **config)`` → what ``prepare_dataset`` committed (counts unchecked
    unless ``verify_counts=True``)."""

    def run(dataset: str, source: Path | str | None, **config: Any) -> Prepared:
        out = str(tmp_path / f"out-{dataset}")
        summary = prepare_dataset(
            PrepareConfig(dataset=dataset, out=out, source=str(source) if source else None, **{"verify_counts": False, **config})
        )
        directory = StoredDirectory(out, kind="interactions", verify="sha256")
        parts = sorted(directory.manifest.paths("part-"))
        return Prepared(
            summary=summary,
            rows=pa.concat_tables([directory.read_table(p) for p in parts]),
            users=directory.read_table("ids/user.parquet").column("raw").to_pylist(),
            items=directory.read_table("ids/item.parquet").column("raw").to_pylist(),
            directory=directory,
        )

    return run


@pytest.fixture
def fails(tmp_path: Path) -> Callable[..., str]:
    """``fails(dataset, source, **config)`` → the DataError message (counts unchecked unless
    ``verify_counts=True``); checks nothing was left behind."""
    from distrec.errors import DataError

    def run(dataset: str, source: Path | str, **config: Any) -> str:
        out = tmp_path / f"failed-{dataset}"
        with pytest.raises(DataError) as info:
            prepare_dataset(
                PrepareConfig(dataset=dataset, out=str(out), source=str(source), **{"verify_counts": False, **config})
            )
        assert not (out / MANIFEST).exists()
        assert not out.exists() or not os.listdir(out), f"left behind: {os.listdir(out)}"
        return str(info.value)

    return run
