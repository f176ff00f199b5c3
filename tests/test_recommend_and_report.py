"""A finished run's report (Markdown, HTML with embedded PNGs) and recommendations from its exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from distrec.config import from_dict
from distrec.recommend import load_recommender
from distrec.train.config import TrainConfig
from distrec.train.report import write_train_report
from jobs.recommend import main as recommend
from tests.helpers import job_on_ranks, tiny_synthetic


def _cfg(data: str, out: str) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {"name": "mf", "dim": 8, "init_std": 0.1},
            "train": {"epochs": 2, "batch_size": 512},
            "output_dir": out,
        },
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tiny_synthetic(str(root / "data"))
    metrics = job_on_ranks("train", _cfg(str(root / "data"), str(root / "out")), str(root / "ckpt"), world=1)
    return root, metrics


def test_report_has_tables_and_plots_that_open(run):
    root, metrics = run
    uri = write_train_report(_cfg(str(root / "data"), str(root / "out")), metrics)
    md = (root / "out" / "report.md").read_text()
    assert "## Metrics" in md and "test_rmse" in md and "## Sharding plan" in md and "history.png" in md
    html = (root / "out" / "report.html").read_text()
    assert uri.endswith("report.html") and "data:image/png;base64," in html and "<table>" in html
    with Image.open(root / "out" / "history.png") as img:
        assert img.size[0] > 200 and img.size[1] > 100


def test_recommend_prints_titles_and_masks_rated_items(run, capsys):
    root, _ = run
    assert recommend(["--run", str(root / "out"), "--user", "7", "--k", "5"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert len(summary["recommended"]) == 5 and all(r["title"].startswith("Synthetic item") for r in summary["recommended"])
    assert not {r["item"] for r in summary["recommended"]} & {r["item"] for r in summary["rated"]}
    assert "top 5 for user 7" in out
    assert recommend(["--run", str(root / "out"), "--item", "3", "--k", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["similar"]) == 3


def test_recommend_unknown_user_is_a_clear_error(run, capsys):
    root, _ = run
    assert recommend(["--run", str(root / "out"), "--user", "no-such-user"]) == 2
    assert "user 'no-such-user' is not in this run's data" in capsys.readouterr().err


def _strict_json(line: str) -> dict:
    """JSON as the standard defines it: NaN, Infinity and -Infinity are refused."""

    def refuse(constant: str):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_recommend_k_runs_from_1_to_the_unseen_items_and_never_emits_infinity(run, capsys):
    """Before: --k -5 returned nearly every item, 0 none, and a k past the unseen items
    returned rated items scored -Infinity (not JSON). Now: exit 2 outside 1..unseen."""
    root, _ = run
    run_dir = str(root / "out")
    rec = load_recommender(run_dir)
    rated, _ = rec.catalogue.rated(rec.catalogue.user("7"))
    unseen = rec.catalogue.num_items - len(np.unique(rated))
    for k in ("0", "-5", "100000"):
        assert recommend(["--run", run_dir, "--user", "7", "--k", k]) == 2
        err = capsys.readouterr().err
        assert f"k={k}: must be between 1 and {unseen} " in err and "Traceback" not in err
    assert recommend(["--run", run_dir, "--user", "7", "--k", str(unseen)]) == 0  # every item the user has not rated
    summary = _strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    mine = {row["item"] for row in rec.describe(rated)}
    assert len(summary["recommended"]) == unseen
    assert not {r["item"] for r in summary["recommended"]} & mine
    assert recommend(["--run", run_dir, "--user", "7", "--k", str(unseen + 1)]) == 2
    capsys.readouterr()
    items = rec.catalogue.num_items
    assert recommend(["--run", run_dir, "--item", "3", "--k", str(items - 1)]) == 0
    assert len(_strict_json(capsys.readouterr().out.strip().splitlines()[-1])["similar"]) == items - 1
    assert recommend(["--run", run_dir, "--item", "3", "--k", str(items)]) == 2
    assert f"must be between 1 and {items - 1} " in capsys.readouterr().err
