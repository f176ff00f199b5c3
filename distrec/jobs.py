"""The job registry: every job that trains or fits a model, by name, in one place.

Each entry gives the job's config class, its driver (``run``: what ``jobs/<name>.py`` runs), the
check that can fail before anything starts (a sweep runs it once, before any trial), the dotted
keys of the locations other processes read (made absolute by ``absolute``: Ray workers and
Tune trials run in other working directories; on a cluster of several nodes they must be shared
storage, runtime/cluster.py), whether its per-epoch reports carry the metrics a
sweep optimises, and, for a job that runs on Ray Train workers, its per-worker function (what
runtime/worker.py runs on each worker).

The command-line jobs, tune, compare and bench read it. Entries name their code as
``"module:attribute"`` and import it only when it is used: the registry imports no job package,
so the Ray worker entry point and the drivers themselves read it without an import circle, and
asking for one job never imports another's libraries (a closed-form fit never loads TorchRec).
Adding a job is its package (config.py, run.py, worker.py if it runs on Ray, report.py) plus
one entry below.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Job", "JOBS", "get_job", "absolute_paths"]


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Job:
    name: str
    config_ref: str  # "module:Class": the job's config dataclass
    run_ref: str  # "module:function": run(cfg[, callbacks]) -> the metrics it wrote to metrics.json
    check_ref: str  # "module:function": check(cfg), what can fail before the job (or any trial) starts
    paths: tuple[str, ...]  # dotted keys of locations, made absolute before the job's workers or trials start
    per_epoch: bool = False  # its per-epoch reports carry the metrics a sweep optimises (ASHA can stop it)
    worker_ref: str | None = None  # "module:function": worker(cfg, session) on each Ray Train worker

    @property
    def config(self) -> type:
        return _resolve(self.config_ref)

    @property
    def worker(self) -> Callable[..., Any]:
        if self.worker_ref is None:
            raise ValueError(f"job {self.name!r} does not run on Ray Train workers")
        return _resolve(self.worker_ref)

    def load(self, path: str | None, overrides: Sequence[str] = ()) -> Any:
        """The job's config from a YAML file (any URI) and ``key=value`` overrides, validated."""
        from distrec.config import load_config

        return load_config(self.config, path, overrides)

    def run(self, cfg: Any, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
        """Run the job; ``callbacks`` (Ray Train callbacks: a Tune trial's reporter) go to its driver."""
        driver = _resolve(self.run_ref)
        return driver(cfg, callbacks) if callbacks else driver(cfg)

    def check(self, cfg: Any) -> Any:
        return _resolve(self.check_ref)(cfg)

    def absolute(self, cfg: Any) -> None:
        """Make the job's ``paths`` in ``cfg`` absolute, in place."""
        absolute_paths(cfg, self.paths)

    def locations(self, cfg: Any) -> dict[str, str]:
        """The job's ``paths`` in ``cfg``, by dotted key (those set)."""
        return {key: getattr(section, leaf) for key, section, leaf in _sections(cfg, self.paths)}


def absolute_paths(cfg: Any, keys: Sequence[str]) -> None:
    """Each location at a dotted key of ``cfg`` made absolute in place (URIs stay as they are); a
    key under a section set to null (``ray: null``) is skipped."""
    from distrec.storage import absolute  # the storage layer: only when paths are resolved

    for _, section, leaf in _sections(cfg, keys):
        setattr(section, leaf, absolute(getattr(section, leaf)))


def _sections(cfg: Any, keys: Sequence[str]) -> list[tuple[str, Any, str]]:
    """(key, the section holding it, its last name) for each dotted key of ``cfg`` that is set:
    a key whose value is null, or under a section set to null (``ray: null``), is left out."""
    found = []
    for key in keys:
        *parents, leaf = key.split(".")
        section = functools.reduce(lambda node, name: getattr(node, name) if node is not None else None, parents, cfg)
        if section is not None and getattr(section, leaf) is not None:
            found.append((key, section, leaf))
    return found


def open_data(cfg: Any) -> Any:
    """The check of a job whose only input is a dataset: it opens (counts checked, see ``DataConfig.open``)."""
    return cfg.data.open()


JOBS = {
    job.name: job
    for job in (
        Job(
            "train",
            config_ref="distrec.train.config:TrainConfig",
            run_ref="distrec.train.run:train",
            check_ref="distrec.train.run:check_config",
            paths=("data.path", "output_dir", "ray.storage_path"),
            per_epoch=True,
            worker_ref="distrec.train.worker:worker",
        ),
        # the compressor's sweep metrics (rmse deltas, cosines) come from the evaluation at the end
        Job(
            "compress",
            config_ref="distrec.compress.config:CompressConfig",
            run_ref="distrec.compress.run:run_compress",
            check_ref="distrec.compress.run:check_sources",
            paths=("source.run", "output_dir", "ray.storage_path"),
            worker_ref="distrec.compress.worker:compress_worker",
        ),
        # EASE / ∞-AE / PopRec: one process solves; a sweep searches model.lambdas one λ per trial
        Job(
            "fit",
            config_ref="distrec.fit.config:FitConfig",
            run_ref="distrec.fit.run:fit_closed_form",
            check_ref="distrec.jobs:open_data",
            paths=("data.path", "output_dir"),
        ),
        # Distill-CF reports its final ∞-AE metrics once (validation picks its best step inside);
        # with ray: null it runs in the driver's process
        Job(
            "distill",
            config_ref="distrec.distill.config:DistillConfig",
            run_ref="distrec.distill.run:run_distill",
            check_ref="distrec.jobs:open_data",
            paths=("data.path", "output_dir", "ray.storage_path"),
            worker_ref="distrec.distill.worker:worker",
        ),
    )
}


def get_job(name: str) -> Job:
    if name not in JOBS:
        raise ValueError(f"no job {name!r}; the registry holds {sorted(JOBS)}")
    return JOBS[name]
