"""The driver side: check the config, connect to Ray, run a TorchTrainer, return metrics.json.

The same call runs on a laptop (no address: an embedded local Ray with this machine's CPUs),
against a cluster (``ray.address`` or ``$RAY_ADDRESS``), and inside ``ray job submit`` (the job
driver is already connected). The run name is derived from ``output_dir`` unless given, so
re-running the same command after the driver died resumes from the last checkpoint: Train V2
finds the run's checkpoints in ``<storage_path>/<name>`` and hands the latest to the workers.

One run at a time writes an ``output_dir``: the driver holds the storage writer lock
(``<output_dir>/_writing.lock``, distrec/storage/lock.py) for the whole run, so a second run
on the same directory refuses at once, naming the holder. A killed driver's lock is stale and
the re-launch takes it over: at once on the same host (the holder's pid is gone), after the
lock's lease (``DISTREC_LOCK_LEASE_S``, 120 s) from another host. A run that fails before
writing anything leaves no ``output_dir`` behind (a directory that was there stays as it was).

A worker error that a retry cannot fix (bad input, a missing or corrupt shard) ends the run at
once instead of after ``ray.max_failures`` restarts (fail_fast.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import ray
import ray._private.ray_constants as ray_constants
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from distrec.errors import UserError
from distrec.config import to_dict
from distrec.data.dataset import InteractionDataset
from distrec.progress import console_for_workers
from distrec.storage import absolute, filesystem, is_local, join, read_text
from distrec.errors import DataError
from distrec.storage.commit import LOCK
from distrec.storage.lock import WriterLock
from distrec.tracking import check_tracking
from distrec.train.config import ADAM_ON_CPU, RayConfig, TrainConfig
from distrec.train.fail_fast import FailFast, worker_error
from distrec.train.report import write_train_report
from distrec.train.worker import ray_worker

__all__ = ["fit", "connect_ray", "start_local_ray", "run_name", "run_workers", "check_config"]

log = logging.getLogger(__name__)

# Environment the workers need from the driver (object-store endpoint, quiet mode, S3 retries);
# besides, whether the driver's console is a terminal (progress.console_for_workers).
_FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "DISTREC_QUIET", "DISTREC_S3_MAX_ATTEMPTS")
# Ray Train runs the training function in a thread of the worker, and glibc gives a new thread
# its own malloc arena, where a step's megabyte-sized tensors kept being mapped and faulted in
# afresh: one MF epoch took 25 s in a thread against 18 s on a main thread, 19 s with one arena
# (README, Benchmarks). Workers start with one arena unless the driver's environment sets it.
_WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}


def run_name(cfg: Any) -> str:
    """``cfg.ray.name``, or a stable name from ``cfg.output_dir`` (same command → same run); any
    job config with ``ray`` and ``output_dir`` sections."""
    if cfg.ray.name:
        return cfg.ray.name
    tail = posixpath.basename(cfg.output_dir.rstrip("/")) or "run"
    return f"{tail}-{hashlib.sha1(cfg.output_dir.encode()).hexdigest()[:8]}"


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


def connect_ray(address: str | None) -> None:
    """Join the given cluster, the one in $RAY_ADDRESS, or start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        hint = (
            "Start one with `make ray-up` or `ray start --head` (see cluster/README.md), check the address, or "
            "unset ray.address and RAY_ADDRESS to run on an embedded local Ray"
        )
        _check_reachable(address, hint)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot reach the Ray cluster at {address!r} ({str(e).splitlines()[0]}). {hint}") from None
        return
    start_local_ray()


def start_local_ray(num_cpus: int | None = None) -> None:
    """An embedded Ray for this process only, reachable from this machine alone, with no
    spot-preemption watcher and worker prints on the console once.

    Loopback only: Ray's processes listen on the node's address, which is 127.0.0.1 here (Ray's
    single-machine mode, as on macOS: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read by Ray at import,
    so set for its processes and switched in this one around ``ray.init``); gloo between the
    workers binds the loopback interface. The dashboard, whose state API Train's placement-group
    cleaner asks, listens on 127.0.0.1 on a free port of its own: never 8265, which belongs to a
    ``make ray-up`` head and its Jobs API.

    It is a new instance even when a stale ``ray start`` left /tmp/ray/ray_current_cluster, and
    its own processes find it by $RAY_ADDRESS (set for them only): Train's placement-group
    cleaner otherwise follows that stale file, fails, and leaves finished runs' CPUs reserved.
    """
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    port = _free_port()
    own = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    loopback = next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)
    if loopback:
        own["GLOO_SOCKET_IFNAME"] = loopback
    saved = {k: os.environ.get(k) for k in own}
    os.environ.update(own)  # inherited by the raylet and so by every Ray worker process
    cluster_mode, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            dashboard_host="127.0.0.1",
            dashboard_port=_free_port(),
            logging_level=logging.WARNING,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_reachable(address: str, hint: str) -> None:
    """Fail in seconds, not minutes: ray.init keeps retrying an address where nothing listens."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", ray:// client addresses: let Ray resolve them
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: nothing answers there ({e.strerror or e}). {hint}") from None


def _check_resources(cfg: RayConfig) -> None:
    resources = ray.cluster_resources()
    if cfg.use_gpu and resources.get("GPU", 0) < cfg.num_workers:
        raise UserError(
            f"ray.use_gpu=true asks for {cfg.num_workers} GPU(s) but the cluster has {int(resources.get('GPU', 0))}. "
            "Set ray.use_gpu=false to train on CPUs, or connect to a cluster with GPUs"
        )
    need = cfg.num_workers * cfg.cpus_per_worker
    if resources.get("CPU", 0) < need:
        raise UserError(
            f"{cfg.num_workers} worker(s) × {cfg.cpus_per_worker:g} CPU need {need:g} CPUs; the cluster has "
            f"{resources.get('CPU', 0):g}. Lower ray.num_workers or ray.cpus_per_worker"
        )


def run_workers(
    entry: Callable[[dict[str, Any]], None],
    payload: dict[str, Any],
    *,
    cfg: RayConfig,
    name: str,
    callbacks: Sequence[UserCallback] = (),
) -> None:
    """``entry(payload)`` on ``cfg.num_workers`` Ray Train workers (a gloo or NCCL process group
    each), checkpoints in ``cfg.storage_path``/``name``; a re-run with the same name resumes. A
    worker's UserError, ConfigError or DataError ends the run at once and is raised here as it
    is; any other failure is retried ``cfg.max_failures`` times, then raised as a UserError with
    the worker's own message. ``callbacks`` see every report and every failed attempt (a Tune
    sweep forwards them to its trial)."""
    connect_ray(cfg.address)
    _check_resources(cfg)
    env = {**_WORKER_ENV, **{k: os.environ[k] for k in (*_FORWARDED_ENV, *_WORKER_ENV) if k in os.environ}, **console_for_workers()}
    trainer = TorchTrainer(
        entry,
        train_loop_config=payload,
        # on GPUs: NCCL for CUDA tensors, gloo for the CPU tensors the loops all-reduce (step counts, totals)
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if cfg.use_gpu else "gloo", timeout_s=cfg.collective_timeout_s),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=cfg.storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            worker_runtime_env={"env_vars": env},
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[*callbacks, FailFast()],
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as e:
        own = worker_error(e)
        if own is not None:
            raise own from None
        raise UserError(f"training failed: {_root_cause(e)}") from e


def fit(cfg: TrainConfig, callbacks: Sequence[UserCallback] = ()) -> dict[str, Any]:
    """Train as configured; returns the metrics the run wrote to ``<output_dir>/metrics.json``.
    Refuses (DataError naming the lock and its holder) while another run writes ``output_dir``."""
    cfg.data.path, cfg.output_dir = absolute(cfg.data.path), absolute(cfg.output_dir)
    cfg.ray.storage_path = absolute(cfg.ray.storage_path)
    check_config(cfg)
    name = run_name(cfg)
    with _removed_if_unwritten(cfg.output_dir), WriterLock(join(cfg.output_dir, LOCK), what=f"training run {name!r}"):
        run_workers(ray_worker, {"config": to_dict(cfg)}, cfg=cfg.ray, name=name, callbacks=callbacks)
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


def _root_cause(error: BaseException) -> str:
    """The worker's own error message, without Ray's wrapping."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return text[-1] if text else repr(seen)
