"""Ray for every job that runs on it: connect (a cluster, or an embedded local Ray), check the
cluster's resources, run a function on Ray Train workers and map their failures to the errors a
user can act on.

The same call runs on a laptop (no address: an embedded local Ray with this machine's CPUs),
against a cluster (``ray.address`` or ``$RAY_ADDRESS``), and inside ``ray job submit`` (the job
driver is already connected). A run is named by ``runtime.config.run_name``, so re-running the
same command after the driver died resumes from the last checkpoint: Train V2 finds the run's
checkpoints in ``<storage_path>/<name>`` and hands the latest to the workers.

A worker error that a retry cannot fix (bad input, a missing or corrupt shard) ends the run at
once instead of after ``ray.max_failures`` restarts (fail_fast.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
import ray.train
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from distrec.config import to_dict
from distrec.console import console_for_workers
from distrec.errors import UserError
from distrec.jobs import get_job
from distrec.loopback import free_port, gloo_on_loopback
from distrec.runtime.cluster import alive_nodes, check_shared_paths
from distrec.runtime.config import RayConfig, run_name
from distrec.runtime.fail_fast import FailFast, worker_error
from distrec.runtime.worker import ray_worker

__all__ = ["connect_ray", "start_local_ray", "check_resources", "run_workers", "run_job_workers", "worker_env"]


# Environment the workers need from the driver (object-store endpoint, quiet mode, S3 retries);
# besides, whether the driver's console is a terminal (console.console_for_workers).
_FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "DISTREC_QUIET", "DISTREC_S3_MAX_ATTEMPTS")
# Ray Train runs the training function in a thread of the worker, and glibc gives a new thread
# its own malloc arena, where a step's megabyte-sized tensors kept being mapped and faulted in
# afresh: one MF epoch took 25 s in a thread against 18 s on a main thread, 19 s with one arena
# (README, Benchmarks). Workers start with one arena unless the driver's environment sets it.
_WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}
# Train V2's controller takes a worker's report off its queue (one slot) when it polls, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and a worker's next report waits for the
# slot: every epoch or sweep shorter than 2 s was stretched to 2 s. Polled every 0.1 s, a report
# waits at most that (ML-1M iALS, 15 sweeps of 0.5 s: the workers' wall time 29.0 s -> 8.3 s;
# BPMF on ML-100K, 150 sweeps: the process 323 s -> 38 s). The driver's value reaches the
# controller (Train propagates it), so a user's own setting wins.
_CONTROLLER_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


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
            with _single_machine(address):
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
    port = free_port()
    own = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    own.update(gloo_on_loopback())
    saved = {k: os.environ.get(k) for k in own}
    os.environ.update(own)  # inherited by the raylet and so by every Ray worker process
    try:
        with _single_machine():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                dashboard_host="127.0.0.1",
                dashboard_port=free_port(),
                logging_level=logging.WARNING,
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _single_machine(address: str | None = None) -> Iterator[None]:
    """Ray's single-machine mode in this process around a ``ray.init`` of an embedded Ray, or
    of a cluster at ``address`` on this machine's loopback (``make ray-up``, ``make
    cluster-local``): in multi-node mode, the default on Linux, Ray swaps 127.0.0.1 for the
    machine's network address, where they do not listen. Any other address: the mode as it is."""
    if address is not None and address.rpartition(":")[0] not in _LOOPBACK_HOSTS:
        yield
        return
    cluster_mode, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


def _check_reachable(address: str, hint: str) -> None:
    """Fail in seconds, not minutes: ray.init keeps retrying an address where nothing listens."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", ray:// client addresses: let Ray resolve them
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r}: nothing answers there ({e.strerror or e}). {hint}"
        ) from None


def check_resources(cfg: RayConfig) -> None:
    """The cluster has the GPUs and CPUs ``cfg`` asks for (an elastic run: its minimum), and nodes
    that can hold its placement strategy, or a UserError saying what to lower (not a run that
    waits for nodes forever)."""
    resources = ray.cluster_resources()
    workers = cfg.min_workers
    if cfg.use_gpu and resources.get("GPU", 0) < workers:
        raise UserError(
            f"ray.use_gpu=true asks for {workers} GPU(s) but the cluster has {int(resources.get('GPU', 0))}. "
            "Set ray.use_gpu=false to train on CPUs, or connect to a cluster with GPUs"
        )
    need = workers * cfg.cpus_per_worker
    if resources.get("CPU", 0) < need:
        raise UserError(
            f"{workers} worker(s) × {cfg.cpus_per_worker:g} CPU need {need:g} CPUs; the cluster has "
            f"{resources.get('CPU', 0):g}. Lower ray.num_workers or ray.cpus_per_worker"
        )
    _check_placement(cfg)


def _check_placement(cfg: RayConfig) -> None:
    """STRICT_SPREAD needs ``num_workers`` (elastic: the minimum) nodes with a worker's resources
    each, STRICT_PACK one node with all of them."""
    strategy = cfg.placement_strategy
    if strategy not in ("STRICT_SPREAD", "STRICT_PACK"):
        return
    workers = cfg.min_workers
    need = {"CPU": cfg.cpus_per_worker, **({"GPU": 1.0} if cfg.use_gpu else {})}
    nodes = [n.get("Resources", {}) for n in alive_nodes()]
    if strategy == "STRICT_SPREAD":
        fit = sum(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes)
        if fit < workers:
            raise UserError(
                f"ray.placement_strategy=STRICT_SPREAD puts each of the {workers} workers on a node of its own, "
                f"but {fit} of the cluster's {len(nodes)} nodes can hold a worker ({need}). Lower ray.num_workers, "
                f"add nodes, or use ray.placement_strategy=SPREAD or PACK"
            )
    elif not any(all(r.get(k, 0) >= v * workers for k, v in need.items()) for r in nodes):
        raise UserError(
            f"ray.placement_strategy=STRICT_PACK puts all {workers} workers on one node, but no node of the "
            f"cluster holds {workers} × {need}. Lower ray.num_workers or ray.cpus_per_worker, or use "
            f"ray.placement_strategy=PACK"
        )


def worker_env() -> dict[str, str]:
    """The environment the driver gives its workers: the S3 endpoint and quiet switch it has,
    one malloc arena unless it sets its own, and what its console is."""
    return {
        **_WORKER_ENV,
        **{k: os.environ[k] for k in (*_FORWARDED_ENV, *_WORKER_ENV) if k in os.environ},
        **console_for_workers(),
    }


def run_workers(
    entry: Callable[[dict[str, Any]], Any],
    payload: dict[str, Any],
    *,
    cfg: RayConfig,
    name: str,
    callbacks: Sequence[UserCallback] = (),
) -> Any:
    """``entry(payload)`` on ``cfg.num_workers`` Ray Train workers (a gloo or NCCL process group
    each; [min, max]: as many as the cluster holds, the group restarted at another size from the
    last checkpoint when a node is lost or one joins), checkpoints in ``cfg.storage_path``/``name``;
    a re-run with the same name resumes. A worker's UserError, ConfigError or DataError ends the
    run at once and is raised here as it is; any other failure is retried ``cfg.max_failures``
    times, then raised as a UserError with the worker's own message. ``callbacks`` see every
    report and every failed attempt (a Tune sweep forwards them to its trial). Returns what
    ``entry`` returned on rank 0 of the attempt that finished."""
    connect_ray(cfg.address)
    check_resources(cfg)
    for key, value in _CONTROLLER_ENV.items():
        os.environ.setdefault(key, value)
    trainer = TorchTrainer(
        entry,
        train_loop_config=payload,
        # on GPUs: NCCL for CUDA tensors, gloo for the CPU tensors the loops all-reduce (step counts, totals)
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if cfg.use_gpu else "gloo", timeout_s=cfg.collective_timeout_s),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,  # (min, max): Train's elastic policy sizes every (re)start
            elastic_resize_monitor_interval_s=cfg.resize_interval_s,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=cfg.storage_path,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            worker_runtime_env={"env_vars": worker_env()},
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[*callbacks, FailFast()],
        ),
    )
    try:
        return trainer.fit().return_value
    except ray.train.TrainingFailedError as e:
        own = worker_error(e)
        if own is not None:
            raise own from None
        raise UserError(f"training failed: {_root_cause(e)}") from e


def run_job_workers(job: str, cfg: Any, *, callbacks: Sequence[UserCallback] = ()) -> Any:
    """Job ``job``'s per-worker function (its ``worker`` in distrec/jobs.py) on the workers of
    ``cfg.ray``, in the run named by ``run_name(cfg)``; ``cfg`` is the job's config. On a
    cluster of several nodes, the job's locations (its ``paths``) must be shared storage: a local
    one outside ``ray.shared_paths`` stops it here, before any worker starts (runtime/cluster.py).
    Returns rank 0's return value."""
    connect_ray(cfg.ray.address)
    check_shared_paths(get_job(job).locations(cfg), shared=cfg.ray.shared_paths, declare="ray.shared_paths")
    return run_workers(ray_worker, {"job": job, "config": to_dict(cfg)}, cfg=cfg.ray, name=run_name(cfg), callbacks=callbacks)


def _root_cause(error: BaseException) -> str:
    """The worker's own error message, without Ray's wrapping."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return text[-1] if text else repr(seen)
