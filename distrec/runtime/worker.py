"""The one Ray Train entry point of every Ray job: ``ray_worker({"job": name, "config": dict})``
runs that job's per-worker function (its ``worker`` in distrec/jobs.py) on this worker; rank 0's
return value reaches the driver (``run_workers``).

This module imports nothing heavy when it loads: Ray unpickles the entry point by reference
before it runs, and the libraries' start-up chatter is silenced before TorchRec is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ray_worker"]


def ray_worker(payload: dict[str, Any]) -> Any:
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import torch

    from distrec.config import from_dict
    from distrec.jobs import get_job
    from distrec.runtime.session import RaySession

    job = get_job(payload["job"])
    cfg = from_dict(job.config, payload["config"], source=f"{job.name} config")
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    return job.worker(cfg, RaySession())
