"""Ray Train's entry point in each worker.

This module imports nothing heavy when it loads: Ray unpickles the entry point by reference
before it runs, and the libraries' start-up chatter is silenced before TorchRec is imported.
"""

from __future__ import annotations

from typing import Any


def ray_worker(payload: dict[str, Any]) -> None:
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import torch

    from distrec.config import from_dict
    from distrec.models.registry import model_loop
    from distrec.train.config import TrainConfig
    from distrec.train.session import RaySession

    cfg = from_dict(TrainConfig, payload["config"], source="train config")
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    loop = model_loop(cfg.model)
    if loop == "dense":
        from distrec.train.dense_loop import train_dense_worker as train
    elif loop == "als":
        from distrec.train.als_loop import train_als_worker as train
    else:
        from distrec.train.loop import train_worker as train
    train(cfg, RaySession())
