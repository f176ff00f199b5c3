"""Start and stop the service: check the run, connect to Ray, start Serve's HTTP proxy on
``host:port``, deploy ``replicas`` copies of the app.

The run is inspected on the driver before Ray starts, so a run without servable exports is
refused at once with the reason (exit 2). The proxy binds ``host``, 127.0.0.1 unless told
otherwise: anyone who can reach the port can read every user's recommendations and history,
and the API has no authentication. Serve keeps replicas alive: one that dies is replaced by
its controller, and requests go to the others meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray import serve

from distrec.recommend import Index
from distrec.runtime.ray import connect_ray
from distrec.serve.artefacts import FACTOR_MODELS, RunSpec, inspect_run
from distrec.serve.errors import NotServable

__all__ = ["check_run", "check_port", "start_service", "serve_until_stopped", "stop_service"]

log = logging.getLogger(__name__)


def check_run(run: str, *, index: Index) -> RunSpec:
    """Everything that can be refused before Ray starts."""
    spec = inspect_run(run)
    if index == "hnsw" and spec.model not in FACTOR_MODELS:
        raise NotServable(f"{spec.run}: index hnsw needs an inner-product model ({', '.join(FACTOR_MODELS)}); "
                          f"{spec.model} scores users' rows, so use --index exact")  # fmt: skip
    return spec


def check_port(host: str, port: int) -> None:
    """Refuse a ``host:port`` this machine cannot listen on (in use, not an address of it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except (OSError, OverflowError) as e:
        raise NotServable(f"--host {host} --port {port}: cannot listen there ({e}); choose another --port") from None


def start_service(
    run: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    index: Index = "exact",
    address: str | None = None,
    cpus_per_replica: float = 1.0,
    name: str = "distrec",
    route_prefix: str = "/",
) -> dict[str, Any]:
    """Deploy the app for ``run`` and return once every replica is up: {url, model, ...}."""
    from distrec.serve.app import RecommendationService

    if replicas < 1 or cpus_per_replica < 0:
        raise NotServable("--replicas must be at least 1 and --cpus-per-replica non-negative")
    spec = check_run(run, index=index)
    connect_ray(address)
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        log.warning("Serve is already running on this Ray cluster: its HTTP options stay as they are")
    except ValueError:
        pass
    serve.start(http_options={"host": host, "port": port})
    app = RecommendationService.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica}).bind(spec, index)
    serve.run(app, name=name, route_prefix=route_prefix)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return {"url": f"http://{shown}:{port}{route_prefix.rstrip('/')}/", "host": host, "port": port, "run": spec.run,
            "model": spec.model, "index": index, "replicas": replicas}  # fmt: skip


def serve_until_stopped(run: str, *, on_ready: Callable[[dict[str, Any]], None], **options: Any) -> dict[str, Any]:
    """``start_service(run, **options)``, ``on_ready(info)``, then serve until Ctrl-C or SIGTERM
    and take the applications down; returns ``info``. SIGTERM is handled as Ctrl-C from the
    moment Ray is up (Ray's own handler would abort the driver). Ray is disconnected before the
    return: its forwarded worker logs would otherwise land after the job's JSON summary line."""
    check_run(run, index=options.get("index", "exact"))  # refused before Ray starts
    address = options.pop("address", None)
    if not (address or os.environ.get("RAY_ADDRESS")):  # the proxy will run here: is the port free?
        check_port(options.get("host", "127.0.0.1"), options.get("port", 8000))
    connect_ray(address)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        info = start_service(run, **options)
        on_ready(info)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            log.info("stopping the service")
        return info
    finally:
        stop_service()
        ray.shutdown()


def stop_service() -> None:
    """Take every Serve application down (the embedded Ray goes with the process)."""
    serve.shutdown()
