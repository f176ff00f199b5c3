"""Ray Train's entry point in each compressor worker (imports nothing heavy when it loads: Ray
unpickles it by reference before it runs)."""

from __future__ import annotations

from typing import Any


def ray_worker(payload: dict[str, Any]) -> None:
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import torch

    from distrec.compress.config import CompressConfig
    from distrec.compress.fit import fit_worker
    from distrec.config import from_dict
    from distrec.train.session import RaySession

    cfg = from_dict(CompressConfig, payload["config"], source="compress config")
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    fit_worker(cfg, RaySession())
