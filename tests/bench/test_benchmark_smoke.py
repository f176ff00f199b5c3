"""`jobs/benchmark.py --quick` on tiny shapes keeps the benchmark code working (times are not checked)."""

from __future__ import annotations

import json

import pytest

from distrec.bench import suites
from distrec.bench.fixed_costs import FIXED_COSTS, fixed_costs_line, mf_fixed_costs
from distrec.bench.harness import Case, run_cases
from distrec.bench.limits import LIMITS, limits_table, machine_limits, relate_to_limits
from jobs.benchmark import main


def test_quick_prepare_and_storage_suites(tmp_path, s3_server, monkeypatch):
    tiny = suites.Shapes(20_000, 30_000, "ml-100k", {"users": 300, "items": 100, "ratings": 5000}, 2, 1, 1)
    monkeypatch.setattr(suites.Shapes, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "bench.json"
    assert main(["--quick", "--suite", "prepare", "--suite", "storage", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    names = {r["name"]: r for r in report["results"]}
    assert set(names) == {"ml25m-csv/pandas", "ml25m-csv/distrec", "ml25m-csv/pandas-pipeline", "netflix-text/pandas",
                          "netflix-text/distrec", "local-disk", "s3-moto-http"}  # fmt: skip
    assert names["ml25m-csv/distrec"]["ratio"] > 0 and names["ml25m-csv/distrec"]["extra"]["ratings"] == 20_000
    assert names["ml25m-csv/pandas-pipeline"]["extra"]["rows"] == 20_000
    assert all(r["rate"] > 0 and r["peak_rss_mb"] > 0 for r in report["results"])


@pytest.mark.slow
def test_quick_train_suite_with_ray(tmp_path, session_ray_env, monkeypatch):
    """The train-mf cases on a tiny dataset; the Ray cases' drivers join the session's Ray (as
    the serve suite's HTTP case does) instead of starting an embedded one each."""
    for key, value in session_ray_env.items():
        monkeypatch.setenv(key, value)
    data = suites.synthetic_dataset(str(tmp_path), None, {"users": 300, "items": 100, "ratings": 8000})
    todo = [
        Case("train-mf", LIMITS, machine_limits, (data,), unit="rows", repeats=1, warmup=False),
        Case("train-mf", "plain", suites.train_plain_torch, (data, 512), unit="samples", repeats=1, warmup=False),
        Case("train-mf", "torchrec", suites.train_distrec, (data, 1), unit="samples", baseline="plain", repeats=1, warmup=False),
        Case("train-mf", "to-target", suites.time_to_target, (data, 1, 2), unit="runs", repeats=1, warmup=False),
        Case("train-mf", FIXED_COSTS, mf_fixed_costs, (data, 1), unit="runs", repeats=1, warmup=False),
    ]
    results = run_cases(todo, log=lambda _: None)
    limits, plain, torchrec, target, fixed = results
    assert plain.rate > 0 and torchrec.rate > 0 and torchrec.ratio == pytest.approx(torchrec.rate / plain.rate)
    # the machine's limits measured in the run, each MF case's updates/s a fraction of them
    assert limits.extra["table_rows"] >= 300 and limits.extra["dim"] == 64 and limits.extra["update_bytes"] == 1024
    assert min(limits.extra[k] for k in ("copy_gb_s", "gather_rows_s", "scatter_rows_s")) > 0
    relate_to_limits(results)
    for case in (plain, torchrec):
        assert case.extra["of_random_limit"] == pytest.approx(case.rate / limits.extra["random_updates_s"])
        assert case.extra["of_streaming_limit"] == pytest.approx(case.rate * 1024 / (limits.extra["copy_gb_s"] * 1e9))
    assert "of_random_limit" not in target.extra  # counted in runs, not updates
    table = limits_table(results)
    assert "copy" in table and "| plain |" in table and "| torchrec |" in table
    for case in (torchrec, target):  # the column covers the workers
        assert case.peak_rss_mb >= case.extra["peak_rss_mb_per_worker"] > 0
    assert target.extra["best_val_rmse"] > 0 and target.extra["target_val_rmse"] > 0
    # jobs/train.py as a user runs it: the process's time less its epochs', the rest by phase
    e = fixed.extra
    assert e["epochs"] == 1 and fixed.median == pytest.approx(e["process_s"] - e["epochs_s"])
    phases = [e[k] for k in ("driver_s", "setup_s", "eval_s", "checkpoint_s", "finish_s")]
    assert min(phases) >= 0 and sum(phases) + e["epochs_s"] <= e["process_s"] * 1.001
    assert "1 epoch as a user runs it" in fixed_costs_line(results)


def test_quick_distill_steps(tmp_path):
    """The distill suite's step at the paper's settings (budget 500, 200 draws) on 600 users x 40
    items, through the C++ sampler where built and through the torch ops."""
    from distrec.bench.distill import distill_steps

    data = suites.synthetic_dataset(
        str(tmp_path), None, {"users": 600, "items": 40, "ratings": 12000}, split="user-ratio:0.8/0.1/0.1"
    )
    todo = [
        Case("distill", "torch-ops", distill_steps, (data, 1, False), unit="steps", repeats=1, warmup=False),
        Case("distill", "step", distill_steps, (data, 2), unit="steps", baseline="torch-ops", repeats=1, warmup=False),
    ]
    ops, step = run_cases(todo, log=lambda _: None)
    assert ops.extra["sampler"] == "torch ops" and step.extra["budget"] == 500 and step.extra["draws"] == 200
    assert step.rate > 0 and step.ratio == pytest.approx(step.rate / ops.rate)
    parts = ("sample_s", "regression_s", "regression_backward_s", "sample_backward_s", "adam_s")
    assert all(step.extra[p] >= 0 for p in parts) and sum(step.extra[p] for p in parts) <= step.extra["s_per_step"] * 1.01


def test_quick_closed_form_and_eval_suites(tmp_path, monkeypatch):
    tiny = suites.Shapes(
        20_000, 30_000, "ml-100k", None, 2, 1, 1, closed_form_like="ml-100k", eval_like="ml-100k", eval_users=300
    )
    monkeypatch.setattr(suites.Shapes, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "bench.json"
    argv = ["--quick", "--suite", "closed-form", "--suite", "eval", "--work", str(tmp_path / "w"), "--out", str(out)]
    assert main(argv) == 0
    names = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(names) == {"ease/steck-numpy", "ease/distrec", "infae/distrec", "topk-only", "full-ranking"}
    reference, ours = names["ease/steck-numpy"]["extra"], names["ease/distrec"]["extra"]
    assert ours["lambda"] == reference["lambda"]  # the same model: the same λ chosen on validation
    assert ours["test_ndcg@10"] == pytest.approx(reference["test_ndcg@10"], abs=1e-3)
    assert names["full-ranking"]["ratio"] > 0 and names["ease/distrec"]["ratio"] > 0


def _allocate(mb: int) -> dict:
    import numpy as np

    block = np.ones(mb * 2**20 // 8)
    return {"seconds": 1.0, "units": float(block.sum() > 0)}


def test_a_case_peak_rss_is_its_own_not_the_driver_s():
    import numpy as np

    driver = np.ones(600 * 2**20 // 8)  # the driver's high-water mark is now above 600 MiB
    small, big = run_cases([Case("rss", "small", _allocate, (10,), unit="x", repeats=1, warmup=False),
                            Case("rss", "big", _allocate, (300,), unit="x", repeats=1, warmup=False)],
                           log=lambda _: None)  # fmt: skip
    assert driver.sum() > 0
    assert small.peak_rss_mb < 300 < big.peak_rss_mb < 600, (small.peak_rss_mb, big.peak_rss_mb)


@pytest.mark.slow
def test_quick_serve_suite(tmp_path, session_ray_env, monkeypatch):
    """An MF run trained on a tiny dataset with many items, served over HTTP on 127.0.0.1 under the
    bounded load, next to the in-process baseline; the latency table and HNSW recall come out. The
    HTTP case deploys on the session's Ray (and takes Serve down again), not on an embedded one.
    (The full suite serves a second run, ML-1M-shaped, through the same cases.)"""
    for key, value in session_ray_env.items():
        monkeypatch.setenv(key, value)
    tiny = suites.Shapes(20_000, 30_000, "ml-100k", None, 2, 1, 1, serve_like=None, serve_netflix=(400, 1500, 12_000),
                         serve_requests=24)  # fmt: skip
    monkeypatch.setattr(suites.Shapes, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "bench.json"
    assert main(["--quick", "--suite", "serve", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    names = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(names) == {"netflix-items/in-process", "netflix-items/http"}
    http, local = names["netflix-items/http"], names["netflix-items/in-process"]
    assert set(http["extra"]["latency"]) == {f"{e} c={c}" for e in ("GET exact", "GET hnsw", "POST fold-in") for c in (1, 8, 32)}
    assert set(local["extra"]["latency"]) == {"in-process exact", "in-process hnsw", "in-process fold-in"}
    for stats in [*http["extra"]["latency"].values(), *local["extra"]["latency"].values()]:
        assert stats["requests"] == 24 and stats["rps"] > 0 and 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert http["ratio"] > 0 and 0 <= local["extra"]["recall@10"] <= 1
    assert local["extra"]["items"] > 1000  # (items never rated are dropped)


@pytest.mark.slow
def test_quick_checkpoint_suite(tmp_path, monkeypatch):
    """The checkpoint suite on tiny MF tables: saved on 2 and 1 gloo workers, restored on 2, and
    resharded 2 → 1 and 1 → 2, through the project's checkpoint code."""
    users, items, dim = 3000, 500, 8
    tiny = suites.Shapes(20_000, 30_000, "ml-100k", None, 2, 1, 1, checkpoint_mf=(users, items, dim))
    monkeypatch.setattr(suites.Shapes, "quick", classmethod(lambda cls: tiny))
    out = tmp_path / "bench.json"
    assert main(["--quick", "--suite", "checkpoint", "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    names = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(names) == {"save-2workers", "save-1worker", "restore-2to2", "restore-2to1-resharded", "restore-1to2-resharded"}
    tables = (users + items) * dim * 4 / 2**20  # the factor tables' weights alone, in MB
    for r in names.values():
        assert r["rate"] > 0 and r["peak_rss_mb"] > 0 and r["extra"]["build_s"] > 0
    for name, saved_by, workers in (("restore-2to2", 2, 2), ("restore-2to1-resharded", 2, 1), ("restore-1to2-resharded", 1, 2)):
        extra = names[name]["extra"]
        assert (extra["saved_by"], extra["workers"]) == (saved_by, workers), name
    for w, name in ((2, "save-2workers"), (1, "save-1worker")):  # a restore reads what a save wrote
        written = names[name]["extra"]["mb"]
        assert written > tables and written == pytest.approx(names[name]["rate"] * names[name]["median_s"])
        assert names[f"restore-{w}to{3 - w}-resharded"]["extra"]["mb"] == pytest.approx(written, rel=0.01)
        assert names[name]["extra"]["write_s"] + names[name]["extra"]["gather_s"] <= names[name]["median_s"] * 1.001
    assert names["restore-2to1-resharded"]["ratio"] > 0 and names["restore-1to2-resharded"]["ratio"] > 0
