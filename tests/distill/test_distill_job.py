"""jobs/distill.py end to end on tiny data: the distilled users beat the real users they started
from on validation, the outputs are complete and verified, S3 in and out (checkpoints too), two
workers agree."""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist

from distrec.config import from_dict
from distrec.distill.config import DistillConfig
from distrec.distill.output import read_synthetic
from distrec.distill.worker import SYNTHETIC_DIR, distill
from distrec.storage import StoredDirectory, join, read_text
from jobs.distill import main
from tests.helpers import check_report, run_ranks, tiny_synthetic, training_seed

SHORT = [
    "budget=12",
    "samples_per_user=20",
    "tau=1.0",
    "lr=0.1",
    "validate_every=10",
    "eval.ks=[5,20]",
    "eval.auc_negatives=0",
    "select=hr@20",
    "model.lambdas=[0.1,1,5]",
    "batch_users=64",
    f"seed={training_seed()}",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=4000, split="user-ratio:0.8/0.1/0.1")
    return out


def test_distill_improves_on_its_initial_real_users(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--quiet", f"data.path={dataset}", f"output_dir={out}", "steps=40", *SHORT]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed == metrics
    assert metrics["best_step"] > 0 and metrics["val_hr@20"] > metrics["initial_val_hr@20"]
    assert 0 < metrics["test_ndcg@5"] <= 1 and metrics["lambda"] in (0.1, 1.0, 5.0)
    curve = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in curve] == list(range(41))
    assert [r["step"] for r in curve if "val_hr@20" in r] == [0, 10, 20, 30, 40]

    x, meta = read_synthetic(str(out / SYNTHETIC_DIR), verify="sha256")
    assert x.shape == (12, 80) and meta["users"] == 12 and meta["step"] == metrics["best_step"]
    assert x.min() >= 0 and x.max() <= 1 and int((x > 0).sum()) == metrics["entries"] == meta["entries"]
    assert float(x.sum(1).mean()) == pytest.approx(metrics["mean_row_mass"], rel=1e-4)
    assert (out / "config.yaml").exists()
    assert metrics["report"] == str(out / "report.html")
    check_report(str(out), ["validation.png"])


def test_data_and_outputs_on_s3(s3_uri, tmp_path):
    tiny_synthetic(join(s3_uri, "data"), users=80, items=60, ratings=1500, split="user-ratio:0.8/0.1/0.1")
    out = join(s3_uri, "distilled")
    args = [
        "--quiet",
        f"data.path={join(s3_uri, 'data')}",
        f"output_dir={out}",
        "steps=2",
        "validate_every=2",
        "checkpoint_every=1",
        "min_weight=0.05",
        *SHORT,
    ]
    assert main(args) == 0
    first = json.loads(read_text(join(out, "metrics.json")))
    assert main(args) == 0  # again: resumes from the checkpoint on S3 after the last step
    metrics = json.loads(read_text(join(out, "metrics.json")))
    assert (
        first["resumed_from_step"] == 0 and metrics["resumed_from_step"] == 2 and metrics["test_ndcg@5"] == first["test_ndcg@5"]
    )
    x, meta = read_synthetic(join(out, SYNTHETIC_DIR))
    assert StoredDirectory(join(out, SYNTHETIC_DIR)).manifest.kind == "distilled-users"
    assert x.shape == (12, 60) and meta["source"] == join(s3_uri, "data")
    assert metrics["entries"] == int((x > 0).sum()) and x[x > 0].min() > 0.05
    assert metrics["report"] == join(out, "report.html")
    check_report(out, ["validation.png"])


def _distill_rank(cfg: dict) -> dict:
    return distill(from_dict(DistillConfig, cfg), rank=dist.get_rank(), world=dist.get_world_size())


@pytest.mark.slow
def test_two_workers_keep_one_synthetic_set(dataset, tmp_path):
    """Each worker draws its own real users; averaged gradients keep the logits identical."""
    cfg = {
        "data": {"path": dataset},
        "output_dir": str(tmp_path / "out"),
        "budget": 12,
        "samples_per_user": 20,
        "tau": 1.0,
        "steps": 6,
        "validate_every": 3,
        "batch_users": 32,
        "eval": {"ks": [5, 20], "auc_negatives": 0},
        "select": "hr@20",
        "model": {"lambdas": [1.0, 5.0]},
        "seed": training_seed(),
    }
    ranks = run_ranks(_distill_rank, 2, cfg)
    for key in ("val_hr@20", "test_ndcg@5", "best_step", "mean_row_mass", "lambda"):
        assert ranks[0][key] == ranks[1][key], key
    assert ranks[0]["num_workers"] == 2
    assert read_synthetic(str(tmp_path / "out" / SYNTHETIC_DIR))[0].shape == (12, 80)
