"""The job registry: every job that trains something, by name — its config class and, for a job
that runs on Ray Train workers, its per-worker function.

Entries name their code as ``"module:attribute"`` and import it only when asked: the registry
imports no job package, so every layer may read it (the Ray worker entry point in
runtime/worker.py, the drivers, tune) without an import circle.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Job", "JOBS", "get_job"]


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Job:
    name: str
    config_ref: str  # "module:Class" of its config dataclass
    worker_ref: str | None = None  # "module:function": worker(cfg, session) on each Ray Train worker

    @property
    def config(self) -> type:
        return _resolve(self.config_ref)

    @property
    def worker(self) -> Callable[..., Any]:
        if self.worker_ref is None:
            raise ValueError(f"job {self.name!r} does not run on Ray Train workers")
        return _resolve(self.worker_ref)


JOBS = {
    job.name: job
    for job in (
        Job("train", "distrec.train.config:TrainConfig", worker_ref="distrec.train.loop:worker"),
        Job("compress", "distrec.compress.config:CompressConfig", worker_ref="distrec.compress.fit:fit_worker"),
        Job("distill", "distrec.distill.config:DistillConfig", worker_ref="distrec.distill.run:worker"),
    )
}


def get_job(name: str) -> Job:
    if name not in JOBS:
        raise ValueError(f"no job {name!r}; the registry holds {sorted(JOBS)}")
    return JOBS[name]
