"""Runs to serve, built once per session from the real trainer and fit job on a tiny dataset:
biased MF (10 epochs: close enough to converged that folding a user back in finds their
vector again), EASE and ∞-AE."""

from __future__ import annotations

import pytest

from distrec.config import from_dict
from distrec.train.config import TrainConfig
from jobs.fit import main as fit
from tests.helpers import job_on_ranks, tiny_synthetic


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serve-runs")
    runs = {name: str(root / name) for name in ("data", "mf", "ease", "infae")}
    tiny_synthetic(runs["data"], split="user-ratio:0.9/0.05/0.05")
    mf = from_dict(TrainConfig, {"data": {"path": runs["data"]}, "model": {"name": "mf", "dim": 8, "init_std": 0.1},
                                 "train": {"epochs": 10, "batch_size": 512, "restore_best": False},
                                 "output_dir": runs["mf"]})  # fmt: skip
    job_on_ranks("train", mf, str(root / "ckpt"), world=1)
    common = ["--quiet", f"data.path={runs['data']}", "eval.ks=[5,20]", "select=ndcg@20"]
    assert fit([*common, f"output_dir={runs['ease']}", "model.name=ease", "model.lambdas=[30,300]"]) == 0
    assert fit([*common, f"output_dir={runs['infae']}", "model.name=infae", "model.lambdas=[1,20]"]) == 0
    return runs
