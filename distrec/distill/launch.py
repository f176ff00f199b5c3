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
from typing import Any

from distrec.distill.config import DistillConfig
from distrec.distill.run import distill
from distrec.storage import absolute, join, read_text

__all__ = ["run_distill"]


def run_distill(cfg: DistillConfig) -> dict[str, Any]:
    cfg.data.path, cfg.output_dir = absolute(cfg.data.path), absolute(cfg.output_dir)
    if cfg.ray is None:
        return distill(cfg)
    from distrec.runtime.ray import run_job_workers  # Ray only when asked for

    cfg.ray.storage_path = absolute(cfg.ray.storage_path)
    run_job_workers("distill", cfg)
    return json.loads(read_text(join(cfg.output_dir, "metrics.json")))
