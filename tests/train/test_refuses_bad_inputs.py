"""Corrupt data and configs that cannot fit stop before training, with errors that say what is
wrong: checked on the driver (``check_config``) before any worker starts, or, for bytes that
only a full read can check, on the worker's first read; and the planner's memory budget at
planning time, with the numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.cli import UserError
from distrec.models.registry import ModelContext, build_model
from distrec.storage import MANIFEST, DataError
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.launch import check_config
from distrec.train.sharding import shard_model
from tests.helpers import run_ranks, stored_file, tiny_synthetic

SHARD = "part-00001.parquet"


@pytest.fixture
def data(tmp_path) -> Path:
    tiny_synthetic(str(tmp_path / "data"), ratings=6000, rows_per_shard=2000)
    return tmp_path / "data"


def _config(data: Path, **overrides) -> TrainConfig:
    return from_dict(TrainConfig, {"data": {"path": str(data), **overrides}, "model": {"name": "mf", "dim": 8}, "output_dir": "unused"})


def _edit_manifest(data: Path, change) -> None:
    raw = json.loads((data / MANIFEST).read_text())
    change(raw)
    (data / MANIFEST).write_text(json.dumps(raw))


def _refused(data: Path, **overrides) -> str:
    with pytest.raises(DataError) as info:
        check_config(_config(data, **overrides))
    return str(info.value)


def test_missing_truncated_and_foreign_schema_are_refused_before_any_worker(data):
    check_config(_config(data))  # the untouched dataset passes
    shard = Path(stored_file(str(data), SHARD))
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # truncated
    assert re.search(rf"^data.path: .*{SHARD}: \d+ bytes, the manifest says {len(good)}", _refused(data))
    shard.unlink()  # listed, missing
    assert f"{SHARD}: listed in the manifest but missing" in _refused(data)
    shard.write_bytes(good)
    _edit_manifest(data, lambda m: m.update(schema_version=99))
    assert "schema version 99, this distrec reads version 1" in _refused(data)


def test_changed_bytes_are_caught_by_sha256_on_the_driver_or_page_crcs_on_the_worker(data):
    shard = Path(stored_file(str(data), SHARD))
    raw = bytearray(shard.read_bytes())
    user = pq.ParquetFile(shard).metadata.row_group(0).column(0)
    raw[(user.dictionary_page_offset or user.data_page_offset) + user.total_compressed_size - 5] ^= 0xFF  # same size
    shard.write_bytes(bytes(raw))
    check_config(_config(data))  # sizes agree: the cheap check passes ...
    assert f"{SHARD}: sha256" in _refused(data, verify="sha256")  # ... a full check does not
    with pytest.raises(DataError, match=rf"{SHARD}: corrupt or unreadable Parquet"):  # nor a worker's first read
        InteractionDataset(str(data)).read(split=None, parts=["train"], rank=0, world=1)


def test_a_truncated_parquet_whose_manifest_agrees_is_refused(data):
    """A writer that recorded a broken file: size and sha256 match, the Parquet does not parse."""
    shard = Path(stored_file(str(data), SHARD))
    cut = shard.read_bytes()[:-100]
    shard.write_bytes(cut)

    def agree(m: dict) -> None:
        entry = next(f for f in m["files"] if f["path"] == SHARD)
        entry.update(bytes=len(cut), sha256=hashlib.sha256(cut).hexdigest())

    _edit_manifest(data, agree)
    check_config(_config(data, verify="sha256"))  # what the manifest promises holds
    with pytest.raises(DataError, match=rf"{SHARD}: corrupt or unreadable Parquet"):
        InteractionDataset(str(data)).read(split=None, parts=["train"], rank=0, world=1)


def _plan(data: str, budget_gb: float) -> str:
    cfg = _config(Path(data))
    ds = InteractionDataset(data)
    model = build_model(cfg.model, ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5), torch.device("meta"))
    with pytest.raises(UserError) as info:
        shard_model(model, optim=OptimConfig(), sharding=ShardingConfig(memory_budget_gb=budget_gb), device=torch.device("cpu"), seed=0)
    return str(info.value)


def test_tables_over_the_memory_budget_fail_at_planning_time_with_the_numbers(data):
    message = run_ranks(_plan, 1, str(data), 1e-6)[0]
    assert "the embedding tables do not fit 1 worker(s)" in message
    assert re.search(r"user: \d+×\d+ \(\d+\.\d+ GiB\)", message) and "memory budget 1e-06 GiB per worker" in message
