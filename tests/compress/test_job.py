"""jobs/compress.py end to end: a multi-shard run on S3 (moto over HTTP) through a real local Ray
with 2 workers, and a corrupted shard stopping the job before any worker starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from distrec.compress.codes import compress, decompress, load_decoder, load_encoder, read_codes
from distrec.compress.config import HoldoutConfig
from distrec.compress.data import holdout_mask
from distrec.storage import StoredDirectory, join, read_text
from distrec.storage.embeddings import EmbeddingShards, read_embeddings
from tests.compress.conftest import write_run
from tests.helpers import check_report, stored_file, training_seed

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
import compress as compress_job  # noqa: E402  (jobs/compress.py)

CONFIG = str(ROOT / "configs" / "compress" / "ml-100k.yaml")


def _args(run: str, out: str, tmp_path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        "--quiet",
        f"source.run={run}",
        f"output_dir={out}",
        f"ray.storage_path={tmp_path / 'ray'}",
        "model.hidden=[16]",
        "model.token_dim=8",
        "fit.epochs=3",
        "fit.batch_size=32",
        "fit.checkpoint_every=2",
        f"fit.seed={training_seed()}",
        *extra,
    ]


def test_corrupted_shard_stops_the_job_before_training(tiny_dataset, tmp_path, capsys):
    run = str(tmp_path / "run")
    write_run(run, tiny_dataset)
    shard = Path(stored_file(str(tmp_path / "run" / "embeddings" / "item"), "part-00001.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert compress_job.main(_args(run, str(out), tmp_path)) == 2
    err = capsys.readouterr().err
    assert "part-00001.parquet" in err and "sha256" in err and "before training" in err
    assert not out.exists() and not (tmp_path / "ray").exists()  # nothing written, no worker started


@pytest.mark.slow
def test_job_reads_a_multi_shard_table_from_s3_and_reuses_the_codec(tiny_dataset, s3_uri, tmp_path, capsys, local_ray):
    run, out = join(s3_uri, "run"), join(s3_uri, "compressed-run")
    write_run(run, tiny_dataset, rows_per_part=100)  # user: 3 shards, item: 2
    users = read_embeddings(join(run, "embeddings", "user"))
    assert len(EmbeddingShards(join(run, "embeddings", "user")).row_groups()) == 3
    assert compress_job.main(_args(run, out, tmp_path, "ratios=[4]")) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(read_text(join(out, "metrics.json"))) == metrics
    for method in ("dds", "pca", "scalar"):
        assert metrics[f"{method}@4x_user_ratio"] == 4 and -1 <= metrics[f"{method}@4x_user_cosine"] <= 1
        assert np.isfinite(metrics[f"{method}@4x_rmse_delta_both"])
    assert metrics["new_users"] > 0 and np.isfinite(metrics["dds@4x_new_users_rmse_delta"])
    assert metrics["report"] == join(out, "report.html")
    html = check_report(out, ["reconstruction.png", "rmse_delta.png"])
    assert "dds@4x" in html  # the summary table

    codes_uri = join(out, "compressed", "user-4x")
    store = StoredDirectory(codes_uri, kind="codes", schema_version=1)
    assert store.meta["rows_per_worker"] == [200, 100]  # worker 0 read shards 0 and 2, worker 1 shard 1
    assert store.meta["train_rows"] == int((~holdout_mask(users.index, HoldoutConfig(), "user")).sum())
    codes = read_codes(codes_uri)
    assert np.array_equal(codes.index, users.index) and codes.codes.dtype == np.int8
    assert np.array_equal(codes.columns["bias"], users.columns["bias"])
    # a new entity is encoded by the stored encoder, no retraining; the stored codes are what it gives
    encoder, decoder = load_encoder(codes_uri), load_decoder(codes_uri)
    assert np.array_equal(compress(users.vector, encoder), codes.codes)
    new = users.vector[:5] + 0.01
    assert decompress(compress(new, encoder), decoder).shape == (5, users.vector.shape[1])
