"""jobs/distill.py on a real local Ray: the loop runs in a Ray Train worker, the driver returns
the metrics it wrote."""

from __future__ import annotations

import json

import pytest

from distrec.distill.output import read_synthetic
from distrec.distill.worker import SYNTHETIC_DIR
from jobs.distill import main
from tests.helpers import tiny_synthetic, training_seed


@pytest.mark.slow
def test_distill_on_a_ray_worker(local_ray, tmp_path, capsys):
    data = str(tmp_path / "data")
    tiny_synthetic(data, users=80, items=60, ratings=1500, split="user-ratio:0.8/0.1/0.1")
    out = tmp_path / "out"
    args = [
        f"data.path={data}",
        f"output_dir={out}",
        "budget=8",
        "samples_per_user=10",
        "steps=3",
        "validate_every=3",
        "eval.ks=[5,20]",
        "select=hr@20",
        "eval.auc_negatives=0",
        "model.lambdas=[1,5]",
        "ray.num_workers=1",
        f"ray.storage_path={tmp_path / 'ray'}",
        f"seed={training_seed()}",
    ]
    assert main(["--quiet", *args]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["num_workers"] == 1 and printed["steps"] == 3
    assert read_synthetic(str(out / SYNTHETIC_DIR))[0].shape == (8, 60)
