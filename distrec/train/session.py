"""Where a worker reports metrics and checkpoints, and finds the checkpoint to resume from."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

import torch.distributed as dist

__all__ = ["Session", "RaySession", "LocalSession"]


class Session(Protocol):
    """Where a worker reports metrics and checkpoints, and finds the one to resume from."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None: ...

    def latest_checkpoint(self) -> Any: ...  # a context manager yielding a directory or None


class LocalSession:
    """Checkpoints in ``<root>/checkpoint_<epoch>``: every worker copies its files into the same
    folder, as Ray Train does with the run's storage."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        target = os.path.join(self.root, f"checkpoint_{metrics['epoch']:05d}")
        shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
        dist.barrier()
        self.reports.append(metrics)

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        found = sorted(d for d in os.listdir(self.root) if d.startswith("checkpoint_")) if os.path.isdir(self.root) else []
        yield os.path.join(self.root, found[-1]) if found else None


class RaySession:
    """Inside a Ray Train worker: checkpoints go to the run's storage, every worker's files into
    the same folder."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory
