"""The ``peers`` suite: distrec's ``als`` beside the libraries users reach for, on the same real
split, in the same run (each case in its own process, see harness.py).

    implicit ALS (benfred/implicit)  vs  als objective: implicit   ML-1M, the ∞-AE paper's split, test nDCG@10
    Spark MLlib ALS (local[2])       vs  als objective: explicit   ML-1M, random 90/10, test RMSE
    myfm Bayesian FM (Gibbs)         vs  als bayesian: true        ML-100K u1, test RMSE

The peers run in ``.venv-peers`` (``make bench-peers-setup``; requirements/peers.txt), through
distrec/bench/peer_fit.py; what they return (factors, test predictions) is scored here with
distrec's metrics, so both sides of a row are measured the same way. implicit gets its own small
grid on validation (the ∞-AE split's val part), its best point then scores test.

A row's ``seconds`` is the fit alone: the peer's fit call; for distrec the sweeps (``fit_s``,
distrec/bench/als.py). ``process_s`` is the whole process (start, imports, data, fit,
prediction). Data comes from ``SHARED_DATASETS`` (../shared/datasets); a peer whose data, Java
or virtualenv is missing is skipped with a line that says why.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from typing import Any

SHARED_DATASETS = "../shared/datasets"
PEERS_PYTHON = ".venv-peers/bin/python"
PEER_FIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_fit.py")

# (name in SHARED_DATASETS, prepare's dataset, --split) of each row's data
DATA = {
    "ml-1m-infae": ("ml-1m-infae", "infae", None),
    "ml-1m-90-10": ("ml-1m-infae", "infae", "random:0.9/0.0/0.1"),
    "ml-100k-u1": ("ml-100k", "ml-100k", "u1"),
}
IMPLICIT_GRID = [
    {"factors": f, "regularization": r, "alpha": a, "iterations": 15} for f in (64, 128) for r in (0.05, 1.0) for a in (2.0, 10.0)
]
SPARK = {
    "rank": 64,
    "maxIter": 4,
    "regParam": 0.065,
}  # configs/als/ml-1m.yaml's rank and sweeps; λ·n_u at our ALS-WR's validation best
MYFM = {"rank": 32, "n_iter": 200}

__all__ = ["SHARED_DATASETS", "PEERS_PYTHON", "peer_cases", "shared_dataset", "implicit_peer", "rating_peer"]


def shared_dataset(work: str, key: str) -> str | None:
    """The prepared dataset of a row (built once under ``work``), or None when the source is absent."""
    from distrec.bench.inputs import once
    from distrec.data.prepare import PrepareConfig, prepare_dataset

    name, dataset, split = DATA[key]
    source = os.path.join(SHARED_DATASETS, name)
    if not os.path.isdir(source):
        return None
    splits = [split] if split else []
    make = lambda tmp: prepare_dataset(PrepareConfig(dataset=dataset, out=tmp, source=source, splits=splits, verify_counts=False))  # noqa: E731
    return once(f"{work}/peers-{key}", make)


def _arrays(data: str, parts: tuple[str, ...]) -> str:
    """The split's parts as arrays for a peer (``<data>.npz`` beside it, written once)."""
    import numpy as np

    from distrec.data.dataset import InteractionDataset

    path = data.rstrip("/") + ".npz"
    if not os.path.exists(path):
        ds = InteractionDataset(data)
        out: dict[str, Any] = {"shape": np.array([ds.num_users, ds.num_items])}
        for part in parts:
            rows = ds.read(split=None, parts=[part])
            out.update({f"{part}_user": rows.user, f"{part}_item": rows.item, f"{part}_rating": rows.rating})
        np.savez(path + ".tmp.npz", **out)
        os.replace(path + ".tmp.npz", path)
    return path


def _run_peer(peer: str, arrays: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the peer wrote, {fit_s, peak_rss_mb, process_s}) of one peer_fit.py process."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.npz")
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }  # implicit's advice: its own threads, 1 BLAS thread
        start = time.perf_counter()
        done = subprocess.run(
            [PEERS_PYTHON, PEER_FIT, peer, arrays, out, json.dumps(params)], env=env, capture_output=True, text=True
        )
        process_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"peer {peer} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        result = dict(np.load(out))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result, {**stats, "process_s": process_s, "peak_rss_mb": max(stats["peak_rss_mb"], children)}


def implicit_peer(data: str) -> dict[str, Any]:
    """implicit's ALS over ``IMPLICIT_GRID`` on the training pairs; the point with the best
    validation nDCG@10 scores test (train + val masked, the ∞-AE protocol)."""
    import torch

    from distrec.console import set_quiet
    from distrec.data.dataset import InteractionDataset
    from distrec.eval.holdout import Holdout
    from distrec.eval.ranking import RankingConfig, evaluate_ranking

    set_quiet(True)
    arrays = _arrays(data, ("train",))
    holdout = Holdout.read(InteractionDataset(data))
    cfg = RankingConfig(ks=[10, 100])
    best: tuple[float, dict, dict, Any] | None = None
    grid_s, rss = 0.0, 0.0
    for params in IMPLICIT_GRID:
        factors, stats = _run_peer("implicit", arrays, params)
        grid_s += stats["fit_s"]
        rss = max(rss, stats["peak_rss_mb"])
        p, q_t = torch.from_numpy(factors["user_factors"]), torch.from_numpy(factors["item_factors"]).T.contiguous()
        scorer = lambda users, p=p, q_t=q_t: p[users] @ q_t  # noqa: E731
        val = evaluate_ranking(scorer, target=holdout.val, seen=holdout.seen("val"), cfg=cfg, prefix="val")["val_ndcg@10"]
        if best is None or val > best[0]:
            best = (val, params, stats, scorer)
    assert best is not None
    val, params, stats, scorer = best
    test = evaluate_ranking(
        scorer, target=holdout.test, seen=holdout.seen("test"), cfg=cfg, prefix="test", propensity=holdout.propensity()
    )
    return {
        "seconds": stats["fit_s"],
        "units": holdout.train.nnz,
        "test_ndcg@10": test["test_ndcg@10"],
        "test_hr@100": test["test_hr@100"],
        "val_ndcg@10": val,
        "params": params,
        "grid_fit_s": grid_s,
        "process_s": stats["process_s"],
        "peak_rss_mb": rss,
    }


def rating_peer(peer: str, data: str, params: dict[str, Any]) -> dict[str, Any]:
    """A rating peer (``spark``, ``myfm``) fitted on train; test RMSE of its predictions clipped
    to the rating scale (the training mean where it has none: a test user or item never trained)."""
    import numpy as np

    from distrec.data.dataset import InteractionDataset

    arrays = _arrays(data, ("train", "test"))
    out, stats = _run_peer(peer, arrays, dict(params))
    ds = InteractionDataset(data)
    split = np.load(arrays)
    pred = out["test_pred"]
    missing = ~np.isfinite(pred)
    pred = np.where(missing, split["train_rating"].mean(), pred)
    pred = np.clip(pred, ds.meta["rating"]["min"], ds.meta["rating"]["max"])
    rmse = float(np.sqrt(np.mean((pred - split["test_rating"]) ** 2)))
    return {
        "seconds": stats["fit_s"],
        "units": len(split["train_rating"]),
        "test_rmse": rmse,
        "test_without_factors": int(missing.sum()),
        "params": params,
        "process_s": stats["process_s"],
        "peak_rss_mb": stats["peak_rss_mb"],
    }


def peers_table(results: list) -> str:
    """The peers suite's results (harness ``Result``s) as a Markdown table — quality, fit,
    process time, peak RSS — and a line of fixed costs per distrec row; "" without peers rows."""
    rows = [r for r in results if r.suite == "peers"]
    if not rows:
        return ""
    lines = [
        "| split | model | test nDCG@10 | test RMSE | fit s | process s | peak RSS MB | fit vs peer |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    fixed = []
    for r in rows:
        split, _, model = r.name.partition("/")
        cells = [
            f"{r.extra[k] * (100 if k == 'test_ndcg@10' else 1):.4g}" if k in r.extra else "–"
            for k in ("test_ndcg@10", "test_rmse")
        ]
        ratio = (
            f"{r.ratio:.2f}× faster" if r.ratio is not None and r.ratio >= 1 else f"{1 / r.ratio:.2f}× slower" if r.ratio else ""
        )
        lines.append(
            f"| {split} | {model} | {' | '.join(cells)} | {r.median:.2f} | {r.extra['process_s']:.1f} "
            f"| {r.peak_rss_mb:,.0f} | {ratio} |"
        )
        if "ray_start_s" in r.extra:
            fixed.append(
                f"{r.name} fixed costs (not in fit s): Ray start {r.extra['ray_start_s']:.1f} s, job start-up (Ray Train, "
                f"workers) {r.extra['job_start_s']:.1f} s, data read {r.extra['read_s']:.1f} s"
            )
    return "\n".join(lines + [""] + fixed)


def _missing() -> dict[str, str]:
    """Why each peer cannot run here (peer → reason); absent when it can."""
    out = {}
    if not os.path.exists(PEERS_PYTHON):
        for peer in ("implicit", "spark", "myfm"):
            out[peer] = f"{PEERS_PYTHON} not found (run `make bench-peers-setup`)"
    if not shutil.which("java"):
        out.setdefault("spark", "no `java` on PATH (Spark needs Java 17 or newer)")
    return out


def peer_cases(work: str) -> list:
    """The peers suite's cases whose inputs exist; a line for each one skipped."""
    from distrec.bench.als import distrec_als
    from distrec.bench.harness import Case

    missing = _missing()
    rows = [
        ("ml-1m-infae", "implicit", "implicit-als", implicit_peer, (), "als-implicit", "configs/als/ml-1m-infae.yaml"),
        ("ml-1m-90-10", "spark", "spark-als", rating_peer, ("spark", SPARK), "als-explicit", "configs/als/ml-1m.yaml"),
        ("ml-100k-u1", "myfm", "myfm-bayesian", rating_peer, ("myfm", MYFM), "als-bayesian", "configs/als/ml-100k-bayesian.yaml"),
    ]
    out = []
    for key, peer, name, fn, args, ours, config in rows:
        data = shared_dataset(work, key)
        if data is None:
            print(f"peers: {name} and {ours} skipped: {os.path.join(SHARED_DATASETS, DATA[key][0])} not found", flush=True)
            continue
        if peer in missing:
            print(f"peers: {name} skipped: {missing[peer]}", flush=True)
        else:
            out.append(Case("peers", f"{key}/{name}", fn, (*args[:1], data, *args[1:]), unit="ratings", repeats=1, warmup=False))
        baseline = None if peer in missing else f"{key}/{name}"
        out.append(
            Case(
                "peers", f"{key}/{ours}", distrec_als, (config, data), unit="ratings", baseline=baseline, repeats=1, warmup=False
            )
        )
    return out
