"""jobs/fit.py end to end on a tiny dataset: λ search on validation, test scores, outputs."""

from __future__ import annotations

import json

import pytest

from jobs.fit import main
from tests.helpers import check_report, tiny_synthetic


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
