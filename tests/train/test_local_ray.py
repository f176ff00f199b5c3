"""The embedded local Ray is reachable from this machine only: while 2 Ray Train workers hold a
gloo process group, every socket its processes listen on is a loopback one, but torch's
TCPStore (see the test), and its dashboard is not on 8265."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest

from distrec.runtime.config import RayConfig
from distrec.runtime.ray import run_workers

pytestmark = pytest.mark.slow


def _hold_a_process_group(payload):
    """Both ranks all-reduce (gloo pairs connected), rank 0 says so, and they hold until released."""
    import os
    import time

    import torch
    import torch.distributed as dist

    dist.all_reduce(torch.ones(1))
    if dist.get_rank() == 0:
        Path(payload["ready"]).write_text(json.dumps({"pid": os.getpid(), "master_port": int(os.environ["MASTER_PORT"])}))
    deadline = time.time() + 300
    while not Path(payload["release"]).exists() and time.time() < deadline:
        time.sleep(0.2)
    dist.barrier()


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_embedded_ray_listens_on_loopback_only(local_ray, tmp_path):
    import psutil
    import ray  # puts its vendored packages, psutil among them, on sys.path

    ready, release = tmp_path / "ready.json", tmp_path / "release"
    cfg = RayConfig(num_workers=2, storage_path=str(tmp_path / "ray"), max_failures=0)
    failure: list[BaseException] = []

    def run():
        try:
            run_workers(_hold_a_process_group, {"ready": str(ready), "release": str(release)}, cfg=cfg, name="loopback")
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.time() + 300
        while not ready.exists() and thread.is_alive() and time.time() < deadline:
            time.sleep(0.5)
        assert ready.exists(), f"the workers never formed a process group: {failure}"
        rank0 = json.loads(ready.read_text())
        me = psutil.Process()
        ours = {me.pid} | {p.pid for p in me.children(recursive=True)}  # this Ray's processes: the driver's tree
        names = {}
        for pid in ours:
            try:
                names[pid] = psutil.Process(pid).name()
            except psutil.NoSuchProcess:
                pass
        listening = [
            (c.pid, c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in ours
        ]
    finally:
        release.touch()
        thread.join(timeout=300)
    assert not failure, failure
    kinds = {names.get(pid, "?") for pid, _, _ in listening}
    assert {"gcs_server", "raylet"} <= kinds and any("RayTrainWorker" in k for k in kinds), kinds  # the servers were seen
    exposed = {(pid, port) for pid, ip, port in listening if not _loopback(ip)}
    # torch.distributed's TCPStore, which rank 0 serves for the process group's rendezvous, listens
    # on every interface: torch offers no address to bind it to (README, Reliability and security).
    assert exposed <= {(rank0["pid"], rank0["master_port"])}, [
        (names.get(p), ip, port) for p, ip, port in listening if not _loopback(ip)
    ]
    dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert dashboard.startswith("127.0.0.1:") and not dashboard.endswith(":8265"), dashboard
    assert 8265 not in {port for _, _, port in listening}
