"""jobs/fit.py end to end on a tiny dataset: λ search on validation, test scores, outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distrec.storage import MANIFEST
from jobs.fit import main
from tests.helpers import check_report, stored_file, tiny_synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=4000, split="user-ratio:0.8/0.1/0.1")
    return out


@pytest.mark.parametrize(
    "model",
    [
        ["model.name=ease", "model.lambdas=[1,30,300]"],
        ["model.name=infae", "model.lambdas=[1,5,20]", "model.support_users=90", "model.depth=2"],
        ["model.name=poprec"],
    ],
    ids=["ease", "infae", "poprec"],
)
def test_fit_job(dataset, tmp_path, capsys, model):
    out = tmp_path / "out"
    assert main(["--quiet", f"data.path={dataset}", f"output_dir={out}", "eval.ks=[5,20]", "select=ndcg@20", *model]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed == metrics
    trials = json.loads((out / "lambdas.json").read_text())
    if model[0] == "model.name=poprec":
        assert metrics["lambda"] is None and len(trials) == 1
    else:
        assert [t["lambda"] for t in trials] == [float(v) for v in model[1].split("=")[1].strip("[]").split(",")]
        assert metrics["val_ndcg@20"] == max(t["val_ndcg@20"] for t in trials)  # the chosen λ is the best on validation
        assert metrics["lambda"] == max(trials, key=lambda t: t["val_ndcg@20"])["lambda"]
    assert metrics["test_users"] == 120 and 0 < metrics["test_ndcg@5"] <= 1
    assert metrics["select"] == "val_ndcg@20" and metrics["peak_rss_mb"] > 0
    if "model.name=infae" in model:
        assert metrics["support_users"] == 90
    assert (out / "config.yaml").exists()
    assert metrics["report"] == str(out / "report.html")
    html = check_report(str(out), ["test_at_k.png"])
    assert html.count("<tr>") >= len(trials) + 1  # the λ table has a row per λ tried


def test_unknown_select_metric_is_a_config_error(dataset, tmp_path, capsys):
    code = main([f"data.path={dataset}", f"output_dir={tmp_path}", "model.name=ease", "select=ndcg@7", "--quiet"])
    assert code == 2
    assert "select: 'ndcg@7' is not a reported metric" in capsys.readouterr().err


def _copy_with_meta(dataset: str, tmp_path, **meta) -> str:
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["meta"].update(meta)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return str(copy)


@pytest.mark.parametrize("items", [10, 10**9], ids=["fewer", "far-more"])
def test_manifest_item_count_that_does_not_match_the_shards(dataset, tmp_path, capsys, items):
    """Before: a ValueError traceback (exit 1) for too few; a 7.5 GiB allocation for 10**9."""
    data = _copy_with_meta(dataset, tmp_path, items=items)
    out = tmp_path / "out"
    assert main(["--quiet", f"data.path={data}", f"output_dir={out}", "model.name=ease"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data.path: {data}/{MANIFEST}: meta.items is {items:,} but "), err
    assert ".parquet" in err and "the manifest does not match its data" in err
    assert not out.exists()


def test_memory_plan_comes_before_reading_the_split(dataset, tmp_path, capsys):
    """With a corrupt data page the split cannot be read; the memory plan refuses first."""
    data = _copy_with_meta(dataset, tmp_path)
    shard = Path(stored_file(data, "part-00000.parquet"))
    raw = bytearray(shard.read_bytes())
    column = pq.ParquetFile(shard).metadata.row_group(0).column(0)
    raw[(column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size - 5] ^= 0xFF  # same size
    shard.write_bytes(bytes(raw))
    out = tmp_path / "out"
    args = ["--quiet", f"data.path={data}", f"output_dir={out}", "model.name=ease", "model.lambdas=[30]"]
    assert main([*args, "model.memory_gb=0.00001"]) == 2
    assert capsys.readouterr().err.startswith("error: EASE on 80 items needs about 0.0 GiB in float64, over the 0.0 GiB budget")
    assert main(args) == 2  # with room for the solve, the read finds the corrupt page
    assert "part-00000.parquet: corrupt or unreadable Parquet" in capsys.readouterr().err
    assert not out.exists()
