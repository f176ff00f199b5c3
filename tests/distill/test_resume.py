"""Distill-CF's checkpoints: a run stopped after a checkpoint (in process, or killed outright)
and started again continues from it, does not redo its steps, and ends exactly as the same run
without the interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import distrec.distill.worker as run
from distrec.config import from_dict
from distrec.distill.config import DistillConfig
from distrec.distill.output import read_synthetic
from distrec.distill.worker import CHECKPOINT_DIR, SYNTHETIC_DIR, distill
from distrec.errors import DataError
from distrec.runtime.session import LocalSession
from jobs.distill import main
from tests.helpers import run_ranks, tiny_synthetic, training_seed

RUN_ONLY = ("wall_s", "distill_s", "peak_rss_mb", "report", "search_s", "test_s", "resumed_from_step", "resumes", "resizes")


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=100, items=70, ratings=3000, split="user-ratio:0.8/0.1/0.1")
    return out


def _cfg(dataset: str, out, **changes) -> DistillConfig:
    cfg = {
        "data": {"path": dataset},
        "output_dir": str(out),
        "budget": 10,
        "samples_per_user": 20,
        "tau": 1.0,
        "lr": 0.1,
        "steps": 30,
        "validate_every": 10,
        "checkpoint_every": 5,
        "batch_users": 48,
        "val_users": 60,
        "eval": {"ks": [5, 20], "auc_negatives": 0},
        "select": "hr@20",
        "model": {"lambdas": [0.1, 1.0, 5.0]},
        "seed": training_seed(),
    }
    return from_dict(DistillConfig, {**cfg, **changes})


def _count_steps(monkeypatch) -> list[int]:
    calls: list[int] = []
    loss = run.distill_loss
    monkeypatch.setattr(run, "distill_loss", lambda *a, **k: calls.append(1) or loss(*a, **k))
    return calls


def _same_run(resumed: dict, whole: dict, resumed_out, whole_out) -> None:
    assert {k: v for k, v in resumed.items() if k not in RUN_ONLY} == {k: v for k, v in whole.items() if k not in RUN_ONLY}
    assert json.loads((resumed_out / "curve.json").read_text()) == json.loads((whole_out / "curve.json").read_text())
    assert torch.equal(read_synthetic(str(resumed_out / SYNTHETIC_DIR))[0], read_synthetic(str(whole_out / SYNTHETIC_DIR))[0])


def test_stopped_run_resumes_where_it_stopped_and_ends_as_the_whole_run(dataset, tmp_path, monkeypatch):
    whole = distill(_cfg(dataset, tmp_path / "whole"))
    assert whole["resumed_from_step"] == 0 and whole["steps"] == 30
    assert sorted(os.listdir(tmp_path / "whole" / CHECKPOINT_DIR)) == ["checkpoint_00025", "checkpoint_00030"]  # the newest two

    report = LocalSession.report

    def report_then_stop(self, metrics, directory):
        report(self, metrics, directory)
        if metrics["epoch"] == 15:
            raise Interrupted  # the process dies right after its third checkpoint

    monkeypatch.setattr(LocalSession, "report", report_then_stop)
    with pytest.raises(Interrupted):
        distill(_cfg(dataset, tmp_path / "cut"))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(LocalSession, "report", report)

    steps = _count_steps(monkeypatch)
    resumed = distill(_cfg(dataset, tmp_path / "cut"))
    assert len(steps) == 15 and resumed["resumed_from_step"] == 15 and resumed["resumes"] == 1  # steps 16..30 only
    _same_run(resumed, whole, tmp_path / "cut", tmp_path / "whole")


def test_finished_or_patient_run_does_not_step_again(dataset, tmp_path, monkeypatch):
    cfg = _cfg(dataset, tmp_path / "out", steps=60, patience=10, lr=50.0)  # a wild lr: validation stops improving
    first = distill(cfg)
    assert first["steps"] < 60
    steps = _count_steps(monkeypatch)
    again = distill(cfg)
    assert steps == [] and again["steps"] == first["steps"] and again["test_ndcg@5"] == first["test_ndcg@5"]


def test_checkpoint_of_another_budget_is_refused(dataset, tmp_path):
    distill(_cfg(dataset, tmp_path / "out", steps=5))
    with pytest.raises(DataError, match="budget"):
        distill(_cfg(dataset, tmp_path / "out", steps=5, budget=11))


@pytest.mark.slow
def test_killed_process_resumes_from_its_checkpoint(dataset, tmp_path):
    """A real SIGKILL mid-run: the job started again skips the checkpointed steps."""
    overrides = [
        f"data.path={dataset}",
        "budget=10",
        "samples_per_user=20",
        "tau=1.0",
        "lr=0.1",
        "steps=300",
        "validate_every=50",
        "checkpoint_every=5",
        "batch_users=48",
        "eval.ks=[5,20]",
        "eval.auc_negatives=0",
        "select=hr@20",
        "model.lambdas=[0.1,1,5]",
        f"seed={training_seed()}",
    ]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [sys.executable, "jobs/distill.py", "--quiet", f"output_dir={out}", *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((out / CHECKPOINT_DIR).glob("checkpoint_*/progress.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL  # killed before it finished
    assert not (out / "metrics.json").exists()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process: the same reductions, the same floats
    try:
        assert main(["--quiet", f"output_dir={out}", *overrides]) == 0
        assert main(["--quiet", f"output_dir={tmp_path / 'whole'}", *overrides]) == 0
    finally:
        torch.set_num_threads(threads)
    resumed = json.loads((out / "metrics.json").read_text())
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert 0 < resumed["resumed_from_step"] < 300 and resumed["resumed_from_step"] % 5 == 0
    _same_run(resumed, whole, out, tmp_path / "whole")


def _stopped_after_step_15(cfg: DistillConfig) -> str:
    """On a gloo rank: the run, ended by its worker's loss right after the step-15 checkpoint."""
    import torch.distributed as dist

    report = LocalSession.report

    def report_then_stop(self, metrics, directory):
        report(self, metrics, directory)
        if metrics["epoch"] == 15:
            raise Interrupted

    LocalSession.report = report_then_stop
    try:
        distill(cfg, rank=dist.get_rank(), world=dist.get_world_size())
    except Interrupted:
        return "stopped"
    return "finished"


@pytest.mark.slow
def test_a_run_of_two_workers_resumes_on_one(dataset, tmp_path):
    """An elastic run that lost a worker: the synthetic users' logits are replicated and each
    step's target users are split by rank at (re)start, so 2 workers' checkpoint goes on with 1."""
    assert run_ranks(_stopped_after_step_15, 2, _cfg(dataset, tmp_path / "cut")) == ["stopped", "stopped"]
    resumed = distill(_cfg(dataset, tmp_path / "cut"))
    assert (resumed["resumed_from_step"], resumed["resumes"], resumed["resizes"], resumed["steps"]) == (15, 1, 1, 30)
    assert [c["step"] for c in json.loads((tmp_path / "cut" / "curve.json").read_text())] == list(range(31))  # each step once
    assert read_synthetic(str(tmp_path / "cut" / SYNTHETIC_DIR))[0].shape[0] == 10  # the budget's users, written once
