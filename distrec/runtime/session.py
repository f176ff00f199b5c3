"""Where a worker of any job reports metrics and checkpoints, and finds the checkpoint to resume from:
Ray Train's run storage inside a Ray worker (``RaySession``), a folder of any URI elsewhere
(``LocalSession``: tests, and Distill-CF without Ray)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch.distributed as dist

from distrec.runtime.checkpoint import PROGRESS
from distrec.storage import filesystem, is_local, join

__all__ = ["Session", "RaySession", "LocalSession"]


class Session(Protocol):
    """Where a worker reports metrics and checkpoints, and finds the one to resume from."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None: ...

    def latest_checkpoint(self) -> Any: ...  # a context manager yielding a directory or None


class LocalSession:
    """Checkpoints in ``<root>/checkpoint_<epoch>`` (``root`` any fsspec URI): every worker copies
    its files into the same folder, as Ray Train does with the run's storage. ``progress.json``
    goes last and a folder without it is passed over, so a copy cut short is never resumed from;
    ``keep`` (None: all) is how many of the newest checkpoints stay."""

    def __init__(self, root: str, *, keep: int | None = None) -> None:
        self.root, self.keep = root, keep
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        fs, root = filesystem(self.root)
        target = f"{root}/checkpoint_{metrics['epoch']:05d}"
        fs.makedirs(target, exist_ok=True)
        names = sorted(os.listdir(checkpoint_dir), key=lambda name: name == PROGRESS)  # progress.json last
        for name in names:
            fs.put_file(os.path.join(checkpoint_dir, name), f"{target}/{name}")
        if dist.is_initialized():
            dist.barrier()
        if self.keep is not None and (not dist.is_initialized() or dist.get_rank() == 0):
            for old in self._complete(fs, root)[: -self.keep]:
                fs.rm(f"{root}/{old}", recursive=True)
        self.reports.append(metrics)

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        fs, root = filesystem(self.root)
        found = self._complete(fs, root)
        if not found:
            yield None
        elif is_local(self.root):
            yield join(root, found[-1])
        else:
            with tempfile.TemporaryDirectory(prefix="distrec-resume-") as tmp:
                for path in fs.ls(f"{root}/{found[-1]}", detail=False):
                    fs.get_file(path, os.path.join(tmp, path.rsplit("/", 1)[-1]))
                yield tmp

    @staticmethod
    def _complete(fs: Any, root: str) -> list[str]:
        """The checkpoint folders holding ``progress.json``, oldest first."""
        if not fs.isdir(root):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
        return [n for n in names if n.startswith("checkpoint_") and fs.exists(f"{root}/{n}/{PROGRESS}")]


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
