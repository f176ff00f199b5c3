"""Where an MF run's time goes outside its epochs' training steps (its fixed costs), measured as a
user meets them: ``jobs/train.py --config configs/mf/ml-1m.yaml`` in a fresh process (the
interpreter and imports, an embedded Ray, Ray Train's controller and workers), for a fixed number
of epochs. The worker's own phases come from the run's metrics (distrec/train/worker.py): its
setup (data read, planner, sharding, resume), validation, checkpoints, and the test and export
at the end; the driver's share is the rest of the process's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distrec.bench.harness import Result

__all__ = ["FIXED_COSTS", "mf_fixed_costs", "fixed_costs_line"]

FIXED_COSTS = "ml-1m-mf-fixed-costs"  # the case's name in the train-mf suite
CONFIG = "configs/mf/ml-1m.yaml"
PHASES = ("setup_s", "eval_s", "checkpoint_s", "finish_s")


def mf_fixed_costs(data: str, epochs: int) -> dict[str, Any]:
    """The job on ``data`` for ``epochs`` epochs (no early stopping): ``seconds`` is the process's
    time less the epochs' training time."""
    from distrec.resources import peak_rss_mb

    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="distrec-bench-fixed-") as out:
        command = [sys.executable, "jobs/train.py", "--config", CONFIG, f"data.path={os.path.abspath(data)}",
                   f"output_dir={out}/run", f"ray.storage_path={out}/ray", f"train.epochs={epochs}",
                   "train.early_stopping_metric=null"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(repo), "DISTREC_QUIET": "1"}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        process_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        metrics = json.loads((Path(out) / "run" / "metrics.json").read_text())
        history = json.loads((Path(out) / "run" / "history.json").read_text())
    epochs_s = sum(h["epoch_s"] for h in history)
    return {
        "seconds": process_s - epochs_s,
        "units": 1,
        "process_s": process_s,
        "epochs": len(history),
        "epochs_s": epochs_s,
        "driver_s": process_s - metrics["wall_s"],  # interpreter, imports, Ray's start, Train's workers, report
        **{k: metrics[k] for k in PHASES},
        **{k: metrics[k] for k in ("val_rmse", "test_rmse") if k in metrics},
        "peak_rss_mb": max(peak_rss_mb(children=True), metrics["peak_rss_mb_per_worker"]),
        "peak_rss_mb_per_worker": metrics["peak_rss_mb_per_worker"],
    }


def fixed_costs_line(results: list[Result]) -> str:
    """The fixed-costs case on a line of its own: the process's time, its epochs', and the rest by phase."""
    found = [r for r in results if r.name == FIXED_COSTS]
    if not found:
        return ""
    e = found[0].extra
    parts = ", ".join(f"{k.removesuffix('_s')} {e[k]:.1f} s" for k in ("driver_s", *PHASES))
    epochs = f"{e['epochs']} epoch{'s' * (e['epochs'] != 1)}"
    return (
        f"\n{CONFIG}, {epochs} as a user runs it: {e['process_s']:.1f} s in all, {e['epochs_s']:.1f} s of it training "
        f"steps; fixed costs {found[0].median:.1f} s ({parts}; driver: interpreter, imports, Ray's start, Train's "
        "controller and workers, report)"
    )
