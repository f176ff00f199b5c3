"""Shared fixtures: a moto S3 server on 127.0.0.1 (real HTTP, real s3fs), an embedded local Ray,
quiet progress bars. Gloo ranks without Ray: tests/helpers.py run_ranks.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

os.environ.setdefault("DISTREC_QUIET", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` compare CPU and CUDA results; where torch sees no GPU they are
    collected (so they must import cleanly) and skipped with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs CUDA: torch.cuda.is_available() is False here (make gpu-check runs these on a GPU machine)"
    )
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server over HTTP on 127.0.0.1; the AWS environment points every client at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "DISTREC_S3_MAX_ATTEMPTS": "3",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="distrec-test")
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_uri(s3_server) -> str:
    """A fresh, empty prefix in the test bucket."""
    return f"s3://distrec-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def _ray_at_exit():
    """Shuts down whatever Ray the session left connected, once, at its end."""
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(_ray_at_exit, s3_server):
    """An embedded 2-CPU Ray, left running for the next module that asks for one (starting one
    costs seconds of both cores): a Ray already connected in this process is an embedded one an
    earlier test started (the suite connects to no cluster in process) and is reused. It starts
    after the S3 server: its workers inherit the test credentials (the driver forwards only the
    endpoint). A test that needs a driver with no Ray connected asks for ``no_ray``."""
    import ray

    from distrec.runtime.ray import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2)
    yield


@pytest.fixture
def session_ray_env(local_ray) -> dict[str, str]:
    """Environment for a child job (jobs/*.py, a benchmark case) that is to run on the session's
    Ray instead of starting an embedded one of its own, which costs seconds of both cores: its
    ``RAY_ADDRESS`` (runtime/ray.py connects there). Tests about a job's own embedded Ray do not
    use it (test_killed_driver.py's first run, test_local_head.py, test_serve_job.py). The
    child, like the session Ray's own processes, is in Ray's single-machine mode (see
    ``start_local_ray``): otherwise it resolves 127.0.0.1 to this machine's address, where that
    Ray does not listen."""
    import ray

    return {"RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture
def no_ray():
    """No Ray connected in this process, as when a user starts a job (the next ``local_ray``
    starts one again)."""
    import ray

    ray.shutdown()
