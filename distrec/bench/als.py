"""distrec's ``als`` as a benchmark case: beside its peers (peers.py) and at Netflix scale.

A case's ``seconds`` is the fit alone: the sweeps' ``sweep_s`` summed (solves and exchanges,
without the per-sweep validation and checkpoint), with Ray already started. The job's fixed
costs are reported apart, never in the fit: Ray's start, the job's start-up beyond the workers'
own time (Ray Train's controller, the worker processes, the report), and the workers' data read.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

__all__ = ["distrec_als", "als_scale"]


def _fit(cfg) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, float]]:
    """Start Ray, then run the job: (metrics, history, fixed costs)."""
    from distrec.jobs import get_job
    from distrec.runtime.ray import start_local_ray

    start = time.perf_counter()
    start_local_ray()
    ray_start_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = get_job("train").run(cfg)
    job_s = time.perf_counter() - start
    history = json.loads(open(f"{cfg.output_dir}/history.json").read())
    fixed = {"ray_start_s": ray_start_s, "job_start_s": job_s - metrics["wall_s"], "read_s": metrics["read_s"]}
    return metrics, history, fixed


def _worker_rss(metrics: dict[str, Any]) -> dict[str, float]:
    return {"peak_rss_mb": metrics["peak_rss_mb_per_worker"], "peak_rss_mb_per_worker": metrics["peak_rss_mb_per_worker"]}


def distrec_als(config: str, data: str, workers: int = 2) -> dict[str, Any]:
    """``jobs/train.py --config <config>`` on ``data`` with ``workers`` workers."""
    process = time.perf_counter()
    from distrec.config import load_config
    from distrec.console import set_quiet
    from distrec.train.config import TrainConfig

    set_quiet(True)
    with tempfile.TemporaryDirectory() as out:
        overrides = [f"data.path={data}", f"output_dir={out}/run", f"ray.storage_path={out}/ray", f"ray.num_workers={workers}",
                     "train.export_embeddings=false"]  # fmt: skip
        metrics, _, fixed = _fit(load_config(TrainConfig, config, overrides))
    quality = {k: metrics[k] for k in ("test_ndcg@10", "test_hr@100", "test_rmse") if k in metrics}
    return {"seconds": metrics["fit_s"], "units": metrics["train_ratings"], **quality, "sweeps": metrics["epochs"], **fixed,
            "process_s": time.perf_counter() - process, **_worker_rss(metrics)}  # fmt: skip


def als_scale(data: str, workers: int, sweeps: int) -> dict[str, Any]:
    """Explicit ALS (dim 32, ALS-WR) for ``sweeps`` sweeps on planted synthetic data: one
    sweep's time (the median) and the sweeps until validation RMSE is within 3 % of the planted
    noise floor."""
    from distrec.config import from_dict
    from distrec.console import set_quiet
    from distrec.data.dataset import InteractionDataset
    from distrec.train.config import TrainConfig

    set_quiet(True)
    target = 1.03 * InteractionDataset(data).meta["noise_floor_rmse"]
    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(TrainConfig, {
            "data": {"path": data},
            "model": {"name": "als", "objective": "explicit", "dim": 32, "l2": 0.05},
            "train": {"epochs": sweeps, "export_embeddings": False},
            "ray": {"num_workers": workers, "storage_path": f"{out}/ray", "max_failures": 0},
            "output_dir": f"{out}/run",
        })  # fmt: skip
        metrics, history, fixed = _fit(cfg)
    reached = next((h["epoch"] for h in history if h["val_rmse"] <= target), None)
    times = sorted(h["sweep_s"] for h in history)
    return {
        "seconds": times[len(times) // 2],
        "units": metrics["train_ratings"],
        "target_val_rmse": target,
        "sweeps_to_target": reached,
        "best_val_rmse": min(h["val_rmse"] for h in history),
        "fit_s": metrics["fit_s"],
        **fixed,
        **_worker_rss(metrics),
    }
