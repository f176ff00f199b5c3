"""`jobs/serve.py` as a user starts it: its own embedded Ray, an HNSW index, 127.0.0.1 only,
stopped by SIGTERM with exit 0 and its JSON summary."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from distrec.recommend import load_recommender
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def test_serve_job_answers_with_hnsw_on_loopback_and_stops_cleanly(serve_runs, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "RAY_ADDRESS": ""}  # its own embedded Ray, not the tests'
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "jobs/serve.py", "--run", serve_runs["mf"], "--port", str(port), "--index", "hnsw",
                             "--cpus-per-replica", "0.5"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)  # fmt: skip
    try:
        assert select.select([proc.stdout], [], [], 300)[0], "the service did not come up in 300 s"
        ready = proc.stdout.readline()  # type: ignore[union-attr]  # printed once every replica is up
        assert ready.startswith(f"serving mf from {serve_runs['mf']}") and f"http://127.0.0.1:{port}/" in ready, (
            ready + open(tmp_path / "serve.log").read()[-3000:])  # fmt: skip
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60))
        assert health["index"] == "hnsw" and health["model"] == "mf"
        exact = load_recommender(serve_runs["mf"])
        hits = []
        for user in ("7", "42", "150"):
            body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/recommend/{user}?k=10", timeout=60))
            exact_items = {r["item"] for r in exact.for_user(user, 10)[1]}
            hits.append(len(exact_items & {r["item"] for r in body["recommended"]}))
            assert not {r["item"] for r in body["recommended"]} & {
                exact.catalogue.item_ids[i] for i in exact.catalogue.rated(exact.catalogue.user(user))[0]
            }
        assert np.mean(hits) >= 9, hits
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
        assert listening and all(a.startswith("127.0.0.1:") for a in listening if a.endswith(f":{port}")), listening
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, open(tmp_path / "serve.log").read()[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped"] is True and summary["host"] == "127.0.0.1" and summary["index"] == "hnsw"
