"""The training job's driver: check the config, run the workers on Ray Train, return metrics.json.

Ray itself (connecting, the workers, their failures) is distrec/runtime/ray.py's; the run name
is derived from ``output_dir`` unless given, so re-running the same command after the driver
died resumes from the last checkpoint.

One run at a time writes an ``output_dir``: the driver holds the storage writer lock
(``<output_dir>/_writing.lock``, distrec/storage/lock.py) for the whole run, so a second run
on the same directory refuses at once, naming the holder. A killed driver's lock is stale and
the re-launch takes it over: at once on the same host (the holder's pid is gone), after the
lock's lease (``DISTREC_LOCK_LEASE_S``, 120 s) from another host. A run that fails before
writing anything leaves no ``output_dir`` behind (a directory that was there stays as it was).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from ray.train.v2.api.callback import UserCallback

from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError, UserError
from distrec.jobs import get_job
from distrec.runtime.config import run_name
from distrec.runtime.ray import run_job_workers
from distrec.storage import filesystem, is_local, join, read_text
from distrec.storage.commit import LOCK
from distrec.storage.lock import WriterLock
from distrec.tracking import check_tracking
from distrec.train.config import ADAM_ON_CPU, TrainConfig
from distrec.train.report import write_train_report

__all__ = ["train", "check_config"]


def check_config(cfg: TrainConfig) -> InteractionDataset:
    """Everything that can be checked before any worker starts."""
    check_tracking(cfg.tracking, output_dir=cfg.output_dir)
    if cfg.optim.sparse == "adam" and not cfg.ray.use_gpu:
        raise UserError(ADAM_ON_CPU)
    if cfg.ray.use_gpu and not (cfg.ray.address or os.environ.get("RAY_ADDRESS")) and not torch.cuda.is_available():
        raise UserError(
            "ray.use_gpu=true, but this machine has no usable GPU (torch.cuda.is_available() is False) and no "
            "cluster address is set. Set ray.use_gpu=false to train on CPUs, or submit to a cluster with GPU "
            "workers (ray.address=..., see cluster/README.md)"
        )
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    if dataset.split_counts(split)["train"] == 0:
        raise DataError(f"{cfg.data.path}: split {split!r} has no training rows")
    return dataset


def train(cfg: TrainConfig, callbacks: Sequence[UserCallback] = ()) -> dict[str, Any]:
    """Train as configured; returns the metrics the run wrote to ``<output_dir>/metrics.json``.
    Refuses (DataError naming the lock and its holder) while another run writes ``output_dir``."""
    get_job("train").absolute(cfg)
    check_config(cfg)
    name = run_name(cfg)
    with _removed_if_unwritten(cfg.output_dir), WriterLock(join(cfg.output_dir, LOCK), what=f"training run {name!r}"):
        run_job_workers("train", cfg, callbacks=callbacks)
        metrics = json.loads(read_text(join(cfg.output_dir, "metrics.json")))
        metrics["report"] = write_train_report(cfg, metrics)
    return metrics


@contextmanager
def _removed_if_unwritten(output_dir: str) -> Iterator[None]:
    """On failure, remove the directories made for ``output_dir`` (it and missing parents) that
    are still empty once the lock is gone; a directory that was there before is never touched,
    nor one the run wrote into. (In object storage a prefix vanishes with its last object.)"""
    made = []
    if is_local(output_dir):
        path = filesystem(output_dir)[1]
        while path and not os.path.exists(path):
            made.append(path)  # deepest first
            path = os.path.dirname(path)
    try:
        yield
    except BaseException:
        for path in made:
            try:
                os.rmdir(path)
            except OSError:  # not empty: the run wrote something, which stays
                break
        raise
