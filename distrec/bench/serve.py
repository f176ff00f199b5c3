"""The serve suite: what answering over HTTP costs, against the same top-k in process.

Inputs (built once under the work directory): a biased MF run (dim 64, two epochs, trained on
one gloo process without Ray) on an ML-1M-shaped synthetic dataset, and one on a dataset with
Netflix's item table (17,770 items; fewer users, which a request does not touch).

Cases, each in its own process (harness.py):

- ``<data>/in-process``: ``Recommender.for_user`` (exact and HNSW) and ``for_items`` (a new
  user folded in from a sampled user's 30 best-rated items) called one at a time, no HTTP;
  and recall@10 of HNSW against exact over the sampled users, seen items excluded in both.
- ``<data>/http``: an embedded Ray, Serve's proxy on 127.0.0.1, the exact and the HNSW app (one
  replica each); a bounded load generator (asyncio + aiohttp, a fixed number of requests at
  each concurrency, after a warm-up) sends ``GET /recommend/{user}`` to each and the fold-in
  ``POST /recommend`` to the exact one. The load generator shares the machine's cores with
  the service.

A case's rate is its exact ``GET`` (HTTP: at the highest concurrency); every endpoint's
requests/s, p50 and p99 are in its ``latency`` extra, and ``serve_table`` prints them.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from distrec.loopback import free_port

__all__ = ["build_mf_run", "serve_in_process", "serve_over_http", "serve_table"]

HISTORY = 30  # best-rated items of a sampled user sent as a new user's liked items
SAMPLE_USERS = 1000  # users the requests cycle through (and recall is measured over)
K = 10


# -- inputs -------------------------------------------------------------------------------------
def _train_one_rank(data: str, out: str) -> None:
    """Biased MF on this process as a one-rank gloo group (the trainer's worker body, no Ray)."""
    import torch.distributed as dist

    from distrec.config import from_dict
    from distrec.console import set_quiet
    from distrec.runtime.session import LocalSession
    from distrec.train.config import TrainConfig
    from distrec.train.worker import train_worker

    set_quiet(True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = from_dict(TrainConfig, {
        "data": {"path": data}, "output_dir": out,
        "model": {"name": "mf", "dim": 64, "init_std": 0.1, "l2": 0.04},
        "train": {"epochs": 2, "batch_size": 8192, "eval_batch_size": 65536},
        "optim": {"sparse": "rowwise_adagrad", "sparse_lr": 0.1},
    })  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as ckpt:
            train_worker(cfg, LocalSession(ckpt))
    finally:
        dist.destroy_process_group()


def build_mf_run(data: str, out: str) -> None:
    """Train the MF run ``out`` on ``data`` in a spawned process (its memory goes with it)."""
    proc = mp.get_context("spawn").Process(target=_train_one_rank, args=(data, out))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"training the serve benchmark's MF run on {data} failed (exit {proc.exitcode})")


# -- requests -----------------------------------------------------------------------------------
def _sample(rec, seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    """Sampled users (raw ids) and, from each, a new user's body: their best-rated items."""
    c = rec.catalogue
    active = np.flatnonzero(np.diff(c.indptr) > 0)
    users = np.random.default_rng(seed).choice(active, size=min(SAMPLE_USERS, len(active)), replace=False)
    bodies = []
    for u in users:
        items, ratings = c.rated(int(u))
        bodies.append({"items": [c.item_ids[i] for i in items[:HISTORY]], "ratings": ratings[:HISTORY].tolist()})
    return [str(c.user_ids[u]) for u in users], bodies


def _stats(latencies: list[float], wall: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "rps": len(ms) / max(wall, 1e-12), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip


def _time_calls(call: Callable[[int], Any], requests: int) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for n in range(requests):
        t = time.perf_counter()
        call(n)
        latencies.append(time.perf_counter() - t)
    return _stats(latencies, time.perf_counter() - start)


def serve_in_process(run: str, requests: int) -> dict[str, Any]:
    """The baseline: the service's own calls, one at a time, without HTTP; HNSW recall@10."""
    import torch

    from distrec.recommend import load_recommender

    torch.set_num_threads(1)  # as in a replica (Ray gives an actor of one CPU one thread)
    exact, hnsw = load_recommender(run), load_recommender(run, index="hnsw")
    users, bodies = _sample(exact)
    for rec in (exact, hnsw):  # warm-up
        for user in users[:20]:
            rec.for_user(user, K)
    latency = {
        "in-process exact": _time_calls(lambda n: exact.for_user(users[n % len(users)], K), requests),
        "in-process hnsw": _time_calls(lambda n: hnsw.for_user(users[n % len(users)], K), requests),
        "in-process fold-in": _time_calls(
            lambda n: exact.for_items(bodies[n % len(bodies)]["items"], bodies[n % len(bodies)]["ratings"], K), requests
        ),
    }
    hits = [len({r["item"] for r in exact.for_user(u, K)[1]} & {r["item"] for r in hnsw.for_user(u, K)[1]}) for u in users]
    seconds = latency["in-process exact"]["requests"] / latency["in-process exact"]["rps"]
    return {"seconds": seconds, "units": requests, "latency": latency, "recall@10": float(np.mean(hits)) / K,
            "recall_users": len(users), "items": exact.catalogue.num_items}  # fmt: skip


async def _load(url: str, requests: int, concurrency: int, bodies: list[Any] | None, paths: list[str]) -> dict[str, float]:
    """``requests`` requests (GET ``url + paths[n]``, or POST ``bodies[n]`` to ``url``) from
    ``concurrency`` concurrent clients; fails on any answer but 200."""
    import aiohttp

    latencies: list[float] = []
    counter = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for n in counter:
            t = time.perf_counter()
            if bodies is None:
                response = await session.get(url + paths[n % len(paths)])
            else:
                response = await session.post(url, json=bodies[n % len(bodies)])
            async with response:
                if response.status != 200:
                    raise RuntimeError(f"{response.method} {response.url}: HTTP {response.status}: {await response.text()}")
                await response.read()
            latencies.append(time.perf_counter() - t)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(session) for _ in range(concurrency))), timeout=1800)
        return _stats(latencies, time.perf_counter() - start)


def serve_over_http(run: str, requests: int, concurrencies: tuple[int, ...]) -> dict[str, Any]:
    """GET exact, GET HNSW and POST fold-in over HTTP at each concurrency (one Serve start)."""
    import ray

    from distrec.console import set_quiet
    from distrec.recommend import load_recommender
    from distrec.serve.launch import start_service, stop_service

    set_quiet(True)
    users, bodies = _sample(load_recommender(run))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        start_service(run, port=port, index="exact", name="exact", route_prefix="/exact", cpus_per_replica=1)
        start_service(run, port=port, index="hnsw", name="hnsw", route_prefix="/hnsw", cpus_per_replica=1)
        gets = [f"/recommend/{u}?k={K}" for u in users]
        endpoints = {
            "GET exact": (f"{base}/exact", None),
            "GET hnsw": (f"{base}/hnsw", None),
            "POST fold-in": (f"{base}/exact/recommend?k={K}", bodies),
        }
        latency: dict[str, dict[str, float]] = {}
        for name, (url, posted) in endpoints.items():
            asyncio.run(_load(url, min(50, requests), 4, posted, gets))  # warm-up
            for c in concurrencies:
                latency[f"{name} c={c}"] = asyncio.run(_load(url, requests, c, posted, gets))
    finally:
        if ray.is_initialized():
            stop_service()
            ray.shutdown()
    top = latency[f"GET exact c={max(concurrencies)}"]
    return {"seconds": top["requests"] / top["rps"], "units": requests, "latency": latency}


# -- the table ----------------------------------------------------------------------------------
def serve_table(results: list) -> str:
    """Every endpoint's requests/s, p50 and p99 from the serve suite's results; recall@10."""
    lines = ["| data | endpoint | req/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|"]
    recall = []
    for r in results:
        if r.suite != "serve":
            continue
        data = r.name.split("/")[0]
        for endpoint, s in r.extra.get("latency", {}).items():
            lines.append(f"| {data} | {endpoint} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
        if "recall@10" in r.extra:
            recall.append(f"{data}: HNSW recall@10 against exact = {r.extra['recall@10']:.3f} "
                          f"({r.extra['recall_users']} users, {r.extra['items']:,} items)")  # fmt: skip
    return "\n".join(lines + [""] + recall)
