"""The distill job's driver: run Distill-CF in this process, or on Ray Train workers.

``ray: null`` runs here (one process). With ``ray.num_workers: N`` the same loop runs on N Ray
Train workers (gloo): each draws its own batch of real users, the logits' gradients are
averaged, rank 0 writes the outputs; the driver returns the ``metrics.json`` it wrote. A run
that fails resumes from its last checkpoint: on Ray from the run's checkpoints (a restarted
worker, or the same command again: the run name comes from ``output_dir``), here from
``<output_dir>/checkpoints/``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from distrec.distill.config import DistillConfig
from distrec.distill.worker import distill
from distrec.jobs import get_job
from distrec.storage import join, read_text

__all__ = ["run_distill"]


def run_distill(cfg: DistillConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """The whole run; returns its metrics (also in ``<output_dir>/metrics.json``). ``callbacks``
    (Ray Train callbacks) see every report of a run on Ray workers."""
    get_job("distill").absolute(cfg)
    if cfg.ray is None:
        return distill(cfg)
    from distrec.runtime.ray import run_job_workers  # Ray only when asked for

    run_job_workers("distill", cfg, callbacks=callbacks)
    return json.loads(read_text(join(cfg.output_dir, "metrics.json")))
