"""Corrupt data and configs that cannot fit stop before training, with errors that say what is
wrong: checked on the driver (``check_config``) before any worker starts, or, for bytes that
only a full read can check, on the worker's first read; and the planner's memory budget at
planning time, with the numbers. An id beyond its table stops a sharded lookup rather than being
read as row 0.
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
from distrec.errors import DataError, UserError
from distrec.models.mf import BiasedMF, MFConfig
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.storage import MANIFEST
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.run import check_config
from distrec.train.sharding import shard_model
from tests.helpers import run_ranks, stored_file, tiny_synthetic

SHARD = "part-00001.parquet"


@pytest.fixture
def data(tmp_path) -> Path:
    tiny_synthetic(str(tmp_path / "data"), ratings=6000, rows_per_shard=2000)
    return tmp_path / "data"


def _config(data: Path, **overrides) -> TrainConfig:
    return from_dict(
        TrainConfig, {"data": {"path": str(data), **overrides}, "model": {"name": "mf", "dim": 8}, "output_dir": "unused"}
    )


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

    _edit_manifest(data, agree)  # what the manifest promises holds, but the footer read for the counts check fails
    assert f"{SHARD}: corrupt or unreadable Parquet" in _refused(data, verify="sha256")
    with pytest.raises(DataError, match=rf"{SHARD}: corrupt or unreadable Parquet"):  # nor does a worker's read
        InteractionDataset(str(data), verify="none").read(split=None, parts=["train"], rank=0, world=1)


def _plan(data: str, budget_gb: float) -> str:
    cfg = _config(Path(data))
    ds = InteractionDataset(data)
    model = build_model(
        cfg.model, ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5), torch.device("meta")
    )
    with pytest.raises(UserError) as info:
        shard_model(
            model, optim=OptimConfig(), sharding=ShardingConfig(memory_budget_gb=budget_gb), device=torch.device("cpu"), seed=0
        )
    return str(info.value)


def test_tables_over_the_memory_budget_fail_at_planning_time_with_the_numbers(data):
    message = run_ranks(_plan, 1, str(data), 1e-6)[0]
    assert "the embedding tables do not fit 1 worker(s)" in message
    assert re.search(r"user: \d+×\d+ \(\d+\.\d+ GiB\)", message) and "memory budget 1e-06 GiB per worker" in message


def test_manifest_counts_that_do_not_match_the_shards_are_refused(data):
    """The manifest's counts size every table; the shards' Parquet statistics say what they must be."""
    meta = json.loads((data / MANIFEST).read_text())["meta"]
    users, items = meta["users"], meta["items"]
    _edit_manifest(data, lambda m: m["meta"].update(users=100))  # fewer than the rows use
    message = _refused(data)
    assert re.search(
        rf"^data.path: {data}/{MANIFEST}: meta.users is 100 but {data}/part-0000\d.parquet holds user index \d+, outside 0..99; ",
        message,
    ), message
    _edit_manifest(data, lambda m: m["meta"].update(users=users, items=10**9))  # far more than the rows use
    assert f"{data}/{MANIFEST}: meta.items is 1,000,000,000 but the shards' item indices run 0..{items - 1}" in _refused(data)
    _edit_manifest(data, lambda m: m["meta"].update(items="many"))
    assert f"{data}/{MANIFEST}: meta.items is 'many', expected a positive whole number" in _refused(data)
    _edit_manifest(data, lambda m: m["meta"].update(items=items))
    check_config(_config(data))


def _lookup_out_of_range(user: int) -> str:
    """A table-wise sharded MF looks up users [1, ``user``] of a 50-row table; what happens."""
    model = BiasedMF(MFConfig(dim=8), num_users=50, num_items=40, global_mean=3.5, device=torch.device("meta"))
    table_wise = ShardingConfig(types={t.name: "table_wise" for t in model.tables})
    dmp, _ = shard_model(model, optim=OptimConfig(), sharding=table_wise, device=torch.device("cpu"), seed=0)
    dmp(model.features(torch.tensor([1, 49]), torch.tensor([2, 39])))  # the last rows are in range
    try:
        dmp(model.features(torch.tensor([1, user]), torch.tensor([2, 3])))
    except RuntimeError as e:
        return str(e)
    return "looked up"


def test_an_id_beyond_its_table_stops_the_sharded_lookup():
    """fbgemm's default bounds check logs "Setting idx to zero" and trains row 0 instead; ours raises.
    The rank that owns the user tables raises; the other, waiting for it, loses its connection."""
    results = run_ranks(_lookup_out_of_range, 2, 50)
    assert "looked up" not in results, results
    assert any("idx < num_rows" in r for r in results), results
