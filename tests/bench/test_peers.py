"""The benchmark's peers suite: it lists the rows whose data and peers are at hand and says why it
skips the others; its table shows quality, fit, process time and the fixed costs; with
``.venv-peers`` present (``make bench-peers-setup``), each peer fits a tiny split and is scored."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from distrec.bench import peers, suites
from distrec.bench.harness import Result


def _ml100k(root) -> None:
    """A tiny ML-100K in the release's format: u.data, u1.base, u1.test (every fifth rating)."""
    rng = np.random.default_rng(0)
    rows = sorted({(int(u), int(i)) for u, i in zip(rng.integers(1, 41, 900), rng.integers(1, 61, 900))})
    lines = [f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{881250949 + k}\n" for k, (u, i) in enumerate(rows)]
    os.makedirs(root)
    (root / "u.data").write_text("".join(lines))
    (root / "u1.base").write_text("".join(line for k, line in enumerate(lines) if k % 5))
    (root / "u1.test").write_text("".join(line for k, line in enumerate(lines) if not k % 5))


@pytest.fixture
def shared(tmp_path, monkeypatch):
    _ml100k(tmp_path / "shared" / "ml-100k")
    monkeypatch.setattr(peers, "SHARED_DATASETS", str(tmp_path / "shared"))
    return tmp_path


def test_the_suite_runs_what_it_has_and_says_why_it_skips_the_rest(shared, monkeypatch, capsys):
    monkeypatch.setattr(peers, "PEERS_PYTHON", str(shared / "no-venv" / "bin" / "python"))
    cases = suites.cases(["peers"], str(shared / "work"), suites.Shapes.quick())
    assert [(c.name, c.baseline) for c in cases] == [("ml-100k-u1/als-bayesian", None)]
    assert cases[0].args[0] == "configs/als/ml-100k-bayesian.yaml"
    out = capsys.readouterr().out
    assert f"implicit-als and als-implicit skipped: {shared}/shared/ml-1m-infae not found" in out
    assert "spark-als and als-explicit skipped" in out
    assert "myfm-bayesian skipped:" in out and "make bench-peers-setup" in out


def test_the_table_shows_quality_times_and_fixed_costs():
    ours = Result(
        "peers",
        "ml-100k-u1/als-bayesian",
        "ratings",
        "ml-100k-u1/myfm-bayesian",
        [2.0],
        40_000.0,
        900.0,
        ratio=4.0,
        extra={"test_rmse": 0.9031, "process_s": 30.0, "ray_start_s": 3.0, "job_start_s": 9.5, "read_s": 0.4},
    )
    theirs = Result(
        "peers",
        "ml-100k-u1/myfm-bayesian",
        "ratings",
        None,
        [8.0],
        10_000.0,
        300.0,
        extra={"test_rmse": 0.9076, "process_s": 11.0},
    )
    table = peers.peers_table([theirs, ours])
    assert "| ml-100k-u1 | myfm-bayesian | – | 0.9076 | 8.00 | 11.0 | 300 |  |" in table
    assert "| ml-100k-u1 | als-bayesian | – | 0.9031 | 2.00 | 30.0 | 900 | 4.00× faster |" in table
    assert (
        "als-bayesian fixed costs (not in fit s): Ray start 3.0 s, job start-up (Ray Train, workers) 9.5 s, data read 0.4 s"
        in table
    )
    assert peers.peers_table([]) == ""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(peers.PEERS_PYTHON), reason="no .venv-peers: run `make bench-peers-setup`")
def test_each_peer_fits_a_tiny_split_and_is_scored(shared, monkeypatch):
    monkeypatch.setattr(peers, "PEERS_PYTHON", os.path.abspath(peers.PEERS_PYTHON))
    data = peers.shared_dataset(str(shared / "work"), "ml-100k-u1")
    monkeypatch.setattr(peers, "IMPLICIT_GRID", [{"factors": 4, "regularization": 0.1, "alpha": 2.0, "iterations": 2}])
    results = {"myfm": peers.rating_peer("myfm", data, {"rank": 4, "n_iter": 5})}
    if shutil.which("java"):
        results["spark"] = peers.rating_peer(
            "spark", data, {"rank": 4, "maxIter": 2, "regParam": 0.1, "cores": 1, "driver_memory": "1g"}
        )
    for peer, row in results.items():
        assert 0.5 < row["test_rmse"] < 2.5 and row["seconds"] > 0 and row["process_s"] >= row["seconds"], (peer, row)
        assert row["units"] == len(np.load(data + ".npz")["train_rating"]) and row["peak_rss_mb"] > 0
