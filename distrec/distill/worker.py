"""Ray Train's entry point in each distillation worker (imports nothing heavy when it loads: Ray
unpickles it by reference before it runs)."""

from __future__ import annotations

from typing import Any


def ray_worker(payload: dict[str, Any]) -> None:
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import ray.train
    import torch

    from distrec.config import from_dict
    from distrec.distill.config import DistillConfig
    from distrec.distill.run import distill
    from distrec.train.session import RaySession

    cfg = from_dict(DistillConfig, payload["config"], source="distill config")
    assert cfg.ray is not None
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    context = ray.train.get_context()
    distill(cfg, rank=context.get_world_rank(), world=context.get_world_size(), session=RaySession())
