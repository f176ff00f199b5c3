"""Flaky object storage: the moto S3 server behind a fault-injecting HTTP proxy (tests/faults.py)
that drops connections, answers 500/503 or answers late for a bounded fraction of requests.

A dataset prepared and read through the flaky proxy must be byte-identical to one prepared
straight against the store; a store that never answers ends in a DataError naming the object.
"""

from __future__ import annotations

import numpy as np
import pytest

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.storage import StoredDirectory, read_text, write_text
from tests.faults import FaultyProxy
from tests.helpers import tiny_synthetic


def _files(uri: str) -> dict[str, tuple[int, str]]:
    return {f.path: (f.bytes, f.sha256) for f in StoredDirectory(uri, verify="sha256").manifest.files}


def test_prepare_and_read_through_a_flaky_store_give_identical_outputs(s3_server, s3_uri, monkeypatch):
    direct, flaky = f"{s3_uri}/direct", f"{s3_uri}/flaky"
    tiny_synthetic(direct, ratings=3000, rows_per_shard=1000)
    with FaultyProxy(s3_server, rate=0.2, seed=1, max_consecutive=2, delay_s=0.2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        tiny_synthetic(flaky, ratings=3000, rows_per_shard=1000)  # writes (and the lock, the split rewrite)
        through_proxy = _files(flaky)  # reads: whole files, sha256 checked
        rows = InteractionDataset(flaky).read(split=None, parts=["train"], rank=0, world=1)  # ranged reads
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    assert through_proxy == _files(direct)
    assert sorted(through_proxy) == sorted(_files(flaky))
    expected = InteractionDataset(direct).read(split=None, parts=["train"], rank=0, world=1)
    assert np.array_equal(rows.user, expected.user) and np.array_equal(rows.rating, expected.rating)
    # the faults really happened, of every kind
    assert set(proxy.injected) == {"drop", "drop_after", "500", "503", "slow"}, proxy.injected
    assert sum(proxy.injected.values()) >= 0.1 * proxy.requests > 3


def test_a_store_that_keeps_failing_ends_with_an_error_naming_the_object(s3_server, s3_uri, monkeypatch):
    write_text(f"{s3_uri}/ok.txt", "hello")
    monkeypatch.setenv("DISTREC_S3_MAX_ATTEMPTS", "2")
    with FaultyProxy(s3_server, rate=1.0, faults=("500", "503"), max_consecutive=None) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(DataError) as read:
            read_text(f"{s3_uri}/ok.txt")
        with pytest.raises(DataError) as write:
            write_text(f"{s3_uri}/metrics.json", "{}")
    assert str(read.value).startswith(f"{s3_uri}/ok.txt: cannot read")
    assert str(write.value).startswith(f"{s3_uri}/metrics.json: cannot write")
    for e in (read.value, write.value):
        assert "kept failing through 2 rounds of 2 attempts" in str(e) and "testing" not in str(e)  # no credentials
    assert proxy.injected["500"] + proxy.injected["503"] == proxy.requests >= 2 * 2 * 2  # every attempt was refused


def test_a_dropping_store_ends_with_an_error_naming_the_object(s3_server, s3_uri, monkeypatch):
    tiny_synthetic(s3_uri, ratings=2000, rows_per_shard=1000)
    monkeypatch.setenv("DISTREC_S3_MAX_ATTEMPTS", "2")
    with FaultyProxy(s3_server, rate=0.0, faults=("drop",), max_consecutive=None) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        dataset = InteractionDataset(s3_uri)
        proxy.rate = 1.0  # the store goes away after the manifest was read: a shard's read fails
        with pytest.raises(
            DataError,
            match=rf"^{s3_uri}/commit-[^/]+/part-00000.parquet: cannot (open|read) \(.*\); the object store kept failing",
        ):
            dataset.read(split=None, parts=["train"], rank=0, world=1)
        with pytest.raises(DataError, match=rf"^{s3_uri}/_manifest.json: cannot read"):
            InteractionDataset(s3_uri)
    assert proxy.injected["drop"] >= 2 * 2 * 2
