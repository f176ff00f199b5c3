"""Training on a real multi-node Ray cluster (`make cluster-local NODES=3`, tests/cluster/conftest.py):
workers on different nodes with data, checkpoints and outputs on S3 (moto over HTTP), the same
metrics as on one node; local paths refused before any worker starts unless declared shared;
`make submit` against the cluster; nodes lost and added; `make cluster-local-down` stopping it
and nothing else.

The tests share one cluster, in file order: the last one stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from distrec import local_head
from distrec.bench.elastic import watch_node_loss
from distrec.compress.codes import read_codes
from distrec.config import from_dict
from distrec.distill.output import read_synthetic
from distrec.distill.worker import SYNTHETIC_DIR
from distrec.errors import UserError
from distrec.runtime.config import RayConfig
from distrec.runtime.ray import check_resources
from distrec.storage import join, read_text
from distrec.storage.embeddings import read_embeddings
from distrec.train.config import TrainConfig
from tests.cluster.conftest import REPO, make
from tests.compress.conftest import write_run
from tests.helpers import free_port, job_on_ranks, tiny_synthetic, training_seed

pytestmark = pytest.mark.slow

MODELS = {
    "mf": {"model": {"name": "mf", "dim": 8, "init_std": 0.1, "l2": 0.05}},
    "mf_bpr": {"model": {"name": "mf_bpr", "dim": 8, "init_std": 0.1, "l2": 0.0001}, "ranking": {"eval": {"ks": [10]}}},
}
# Both runs read the same rows in the same order (each rank its own slice, shuffled by
# (seed, epoch, rank)) and take the same steps: two nodes change only where the processes run
# and the network their gloo collectives cross. The tolerance allows only for another order of
# floating-point sums in a reduction.
SAME_RUN = {"rtol": 1e-6, "atol": 1e-9}


def _config(model: str, data: str, out: str, storage: str, epochs: int = 2, **ray) -> dict:
    return {
        "data": {"path": data},
        **MODELS[model],
        "train": {"epochs": epochs, "batch_size": 512, "seed": training_seed()},
        "ray": {"num_workers": 2, "storage_path": storage, **ray},
        "output_dir": out,
    }


@pytest.fixture(scope="module")
def s3_data(s3_server) -> str:
    uri = f"s3://distrec-test/{uuid.uuid4().hex[:12]}/data"
    tiny_synthetic(uri, users=200, items=100, ratings=4000, rows_per_shard=2000)
    return uri


def _listening(pids: list[int]) -> set[str]:
    """The addresses the processes under ``pids`` (and their descendants) listen on."""
    import psutil
    import ray  # noqa: F401  (puts its vendored packages, psutil among them, on sys.path)

    addresses = set()
    for pid in pids:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                addresses |= {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return addresses


def test_cluster_local_has_a_token_authenticated_head_and_two_worker_nodes_on_loopback(local_cluster):
    info = local_cluster.info
    assert info["address"].startswith("127.0.0.1:")
    workers = info["workers"]
    assert [(w["resource"], w["num_cpus"]) for w in workers] == [("node_1", 1), ("node_2", 1)]
    assert local_cluster.alive() == {"node_0": info["node_id"], **local_cluster.worker_nodes}  # three raylets
    assert len({info["node_id"], *local_cluster.worker_nodes.values()}) == 3
    assert len({info["temp_dir"], *(w["temp_dir"] for w in workers)}) == 3  # each its own disk space
    listening = _listening([info["pid"], *(w["pid"] for w in workers)])
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    # its Jobs API (token auth, as every distrec head): no token, or another one, is refused
    token = local_cluster.env["RAY_AUTH_TOKEN"]
    assert (_status(info["dashboard"], None), _status(info["dashboard"], "not-the-token")) == (401, 403)
    assert _status(info["dashboard"], token) == 200
    no_token = {k: v for k, v in local_cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    listing = subprocess.run(
        [ray_cli, "job", "list", "--address", info["dashboard"]], env=no_token, capture_output=True, text=True
    )
    assert listing.returncode != 0 and "authentication" in (listing.stdout + listing.stderr).lower()
    again = make("cluster-local", env=local_cluster.env, NODES=3, RAY_HEAD=local_cluster.record, RAY_PORT=free_port())
    assert again.returncode != 0 and "already running" in again.stderr, again.stdout + again.stderr  # one per record


def _status(address: str, token: str | None) -> int:
    """The HTTP status of a Jobs API listing, with ``token`` as the bearer (none: no header)."""
    request = urllib.request.Request(f"{address}/api/jobs/")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def _metrics(run: dict) -> dict[str, float]:
    return {k: v for k, v in run.items() if k.startswith(("test_", "val_", "train_loss")) and isinstance(v, float)}


def _history(output_dir: str) -> list[dict[str, float]]:
    return [_metrics(h) for h in json.loads(read_text(join(output_dir, "history.json")))]


def test_two_nodes_train_a_top_k_model_from_s3_as_one_node_does(local_cluster, s3_data, tmp_path):
    """MF-BPR with data, checkpoints and outputs on S3, submitted with `make submit` (the Jobs API
    of the cluster's head), one worker on each worker node (ray.placement_strategy=STRICT_SPREAD).
    The same config on one machine (Ray Train's training function on 2 gloo processes here) gives
    the same metrics, every epoch. (MF runs on the two nodes in the elastic test below.)"""
    root = f"s3://distrec-test/{uuid.uuid4().hex[:12]}"
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(_config("mf_bpr", s3_data, f"{root}/two-nodes", f"{root}/ray", epochs=1, placement_strategy="STRICT_SPREAD"))
    )
    run = make("submit", env=local_cluster.env, RAY_HEAD=local_cluster.record, CONFIG=config, ARGS="--quiet")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    on_two = json.loads(read_text(f"{root}/two-nodes/metrics.json"))
    assert on_two["num_workers"] == 2 and on_two["epochs"] == 1
    nodes = on_two["worker_nodes"]
    assert len(set(nodes)) == 2 and set(nodes) == set(local_cluster.worker_nodes.values())  # rank 0 and 1 apart
    assert json.loads(read_text(f"{root}/two-nodes/embeddings/item/_manifest.json"))

    one = _on_one_machine(_config("mf_bpr", s3_data, f"{root}/one-node", f"{root}/ray-one", 1), str(tmp_path / "one"))
    torch.testing.assert_close(_metrics(on_two), _metrics(one), **SAME_RUN)
    torch.testing.assert_close(_history(f"{root}/two-nodes"), _history(f"{root}/one-node"), **SAME_RUN)


def test_local_paths_are_refused_before_any_worker_starts_unless_declared_shared(local_cluster, tmp_path):
    shared = tmp_path / "shared"
    data, out, storage = shared / "data", shared / "out", shared / "ray"
    tiny_synthetic(str(data), users=200, items=100, ratings=4000, rows_per_shard=2000)
    paths = [f"data.path={data}", f"output_dir={out}", f"ray.storage_path={storage}"]
    refused = local_cluster.job("train.py", "--config", str(REPO / "configs/mf/demo.yaml"), *paths)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    error = refused.stderr
    assert "Traceback" not in error
    for key, path in (("data.path", data), ("ray.storage_path", storage), ("output_dir", out)):
        assert f"{key}={path}" in error, error
    assert "3 nodes" in error and "cannot read this machine's disk" in error, error
    assert "s3://" in error and f"ray.shared_paths=[{shared}]" in error, error
    assert not out.exists() and not storage.exists()  # nothing started, nothing left behind
    # a sweep, whose trials run on any node, before its first trial (the sweep's own setting named)
    sweep = shared / "sweep"
    refused = local_cluster.job(
        "tune.py", "--config", str(REPO / "configs/tune/ease-ml-1m.yaml"), f"data.path={data}", f"output_dir={sweep}",
        address_key="ray_address",
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"data.path={data}, output_dir={sweep}: not shared storage" in refused.stderr, refused.stderr
    assert f"shared_paths=[{shared}]" in refused.stderr and not sweep.exists(), refused.stderr

    # Declared shared (the cluster's nodes all see this machine's disk, as NFS-mounted nodes see
    # theirs), the same paths pass: the job goes on to its next check, which refuses 3 workers on
    # 2 CPUs, still before any worker starts.
    accepted = local_cluster.job(
        "train.py", "--config", str(REPO / "configs/mf/demo.yaml"), *paths, "ray.num_workers=3", f"ray.shared_paths=[{shared}]"
    )
    assert accepted.returncode == 2 and "not shared storage" not in accepted.stderr, (
        accepted.stdout[-3000:] + accepted.stderr[-3000:]
    )
    assert "3 worker(s) × 1 CPU need 3 CPUs; the cluster has 2" in accepted.stderr, accepted.stderr


def test_a_placement_the_nodes_cannot_hold_is_refused(local_ray):
    """On the embedded Ray (one node of 2 CPUs): refused at once instead of waiting for nodes.
    (STRICT_PACK's refusal needs a cluster with CPUs enough but no node to hold them all.)"""
    check_resources(RayConfig(num_workers=2, placement_strategy="STRICT_PACK"))
    with pytest.raises(
        UserError, match="STRICT_SPREAD puts each of the 2 workers on a node of its own, but 1 of the cluster's 1 nodes"
    ):
        check_resources(RayConfig(num_workers=2, placement_strategy="STRICT_SPREAD"))


# Epochs of the elastic run: enough that it is still on 1 worker once the node it gets back has
# started and the run restarts onto it (~20 s here; ~0.2 s an epoch on 1 worker).
ELASTIC_EPOCHS = 170
# The elastic run reads other batches than the uninterrupted one after each resize (each worker
# shuffles its own share), so they agree as two seeds of one config do, not bit for bit: measured
# within 0.0005 of each other in val and test RMSE over six runs.
ELASTIC_RMSE = 0.01


def test_an_elastic_run_loses_a_node_goes_on_with_one_worker_and_grows_back(local_cluster, s3_data, tmp_path):
    """MF on `ray.num_workers: [1, 2]` over the two worker nodes, data and outputs on S3, the
    checkpoints in a local folder declared shared (as NFS would be; a checkpoint a epoch, faster
    here than through the S3 server): node_2 is lost mid-run (its raylet and all its processes
    SIGKILLed), the run resumes on 1 worker from its last checkpoint with the tables resharded,
    node_3 joins and the run grows back to 2 workers, then finishes: every epoch once, its world
    size recorded, the resumes and resizes counted, the embeddings whole, the final metrics near
    the uninterrupted run of the same config."""
    root = f"s3://distrec-test/{uuid.uuid4().hex[:12]}"
    shared = tmp_path / "nfs"
    cfg = _config("mf", s3_data, f"{root}/elastic", str(shared / "ray"), epochs=ELASTIC_EPOCHS)
    cfg["train"] = {"epochs": ELASTIC_EPOCHS, "global_batch_size": 512, "seed": training_seed()}
    cfg["ray"].update(num_workers=[1, 2], resize_interval_s=1, max_failures=4, shared_paths=[str(shared)])
    config = tmp_path / "elastic.yaml"
    config.write_text(json.dumps(cfg))
    # the first restart after the loss may still count node_2 (Ray's view is up to 20 s old) and
    # wait this long for 2 workers before it goes on with 1 (Ray's default: 60 s)
    env = {**local_cluster.env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10"}

    def add() -> None:
        local_cluster.add_node()
        local_cluster.refresh_elastic_view()

    run = watch_node_loss(
        [sys.executable, "jobs/train.py", "--config", str(config), f"ray.address={local_cluster.address}"],
        env=env, cwd=str(REPO), lose=lambda: local_cluster.kill_node(2), add=add,
    )  # fmt: skip  # node_2 lost after epoch 2: one of the two workers
    assert run.returncode == 0, run.tail()
    print("".join(line for line in run.lines if "epoch " in line or "resumed" in line), run.times)
    assert run.events == ["lost", "resumed", "added", "grown"], run.tail()
    lost = run.lost
    assert not Path(lost["temp_dir"]).exists() and not local_head.processes_under(lost["temp_dir"])
    assert set(local_cluster.alive()) == {"node_0", "node_1", "node_3"}

    history = json.loads(read_text(f"{root}/elastic/history.json"))
    assert [h["epoch"] for h in history] == list(range(1, ELASTIC_EPOCHS + 1))  # every epoch once
    worlds = [h["world"] for h in history]
    shrunk, grown = worlds.index(1), len(worlds) - worlds[::-1].index(1)
    assert set(worlds[:shrunk]) == {2} and set(worlds[shrunk:grown]) == {1} and set(worlds[grown:]) == {2}, worlds
    elastic = json.loads(read_text(f"{root}/elastic/metrics.json"))
    assert (elastic["resumes"], elastic["resizes"], elastic["num_workers"]) == (2, 2, 2), elastic
    assert set(elastic["worker_nodes"]) == {local_cluster.worker_nodes["node_1"], local_cluster.worker_nodes["node_3"]}

    cfg["ray"] = {"num_workers": 2}
    whole = _on_one_machine({**cfg, "output_dir": str(tmp_path / "whole")}, str(tmp_path / "whole-ckpt"))
    for table in ("user", "item"):  # every row, each part checked against its manifest's sha256
        exported = read_embeddings(f"{root}/elastic/embeddings/{table}", verify="sha256")
        assert np.array_equal(exported.index, read_embeddings(str(tmp_path / "whole" / "embeddings" / table)).index)
    print({k: (elastic[k], whole[k]) for k in ("val_rmse", "test_rmse")})
    for key in ("val_rmse", "test_rmse"):
        assert abs(elastic[key] - whole[key]) < ELASTIC_RMSE, (key, elastic[key], whole[key])


# The compressor's and Distill-CF's elastic runs: a checkpoint an epoch (step), enough of them
# that the run is still going when the node's loss lands (~0.1 s each here); the config key of
# the seed, and the split the job reads.
OTHER_JOBS = {
    "compress": (["--config", str(REPO / "configs/compress/ml-100k.yaml"), "source.tables=[user]", "ratios=[8]",
                  "model.hidden=[16]", "model.token_dim=8", "fit.epochs=60", "fit.batch_size=32",
                  "fit.checkpoint_every=1"], "fit.seed", "random:0.8/0.1/0.1"),
    "distill": (["--config", str(REPO / "configs/distill/ml-1m.yaml"), "budget=8", "samples_per_user=10", "steps=60",
                 "patience=1000", "validate_every=30", "checkpoint_every=1", "batch_users=32", "eval.ks=[5,20]",
                 "select=hr@20", "eval.auc_negatives=0", "model.lambdas=[1,5]"], "seed", "user-ratio:0.8/0.1/0.1"),
}  # fmt: skip
OTHER_JOB_STEPS = 60


@pytest.mark.parametrize("job", sorted(OTHER_JOBS))
def test_the_compressor_and_distill_cf_lose_a_node_and_go_on_with_one_worker(local_cluster, job, tmp_path):
    """The other elastic jobs on `ray.num_workers: [1, 2]`, their inputs, checkpoints and outputs in
    a folder declared shared: a worker node lost after their third checkpoint, they resume from
    the last one on the worker left (the compressor's rows, Distill-CF's target users shared out
    anew) and finish with every epoch (step) once and their outputs whole. A node joins afterwards:
    the tests after this one start from two worker nodes again."""
    args, seed, split = OTHER_JOBS[job]
    shared = tmp_path / "nfs"
    data, run, out = shared / "data", shared / "run", shared / "out"
    tiny_synthetic(str(data), users=300, items=200, ratings=12_000, split=split)
    if job == "compress":
        write_run(str(run), str(data))
    inputs = [f"source.run={run}"] if job == "compress" else [f"data.path={data}"]
    ray = ["ray.num_workers=[1,2]", "ray.max_failures=2", f"ray.storage_path={shared / 'ray'}", f"ray.shared_paths=[{shared}]"]
    command = [sys.executable, f"jobs/{job}.py", *args, *inputs, *ray, f"output_dir={out}", f"{seed}={training_seed()}"]
    lose = int(max(local_cluster.worker_nodes).removeprefix("node_"))
    env = {**local_cluster.env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10"}  # as in the elastic test above
    elastic = watch_node_loss(
        [*command, f"ray.address={local_cluster.address}"], env=env, cwd=str(REPO), lose_after=3,
        lose=lambda: local_cluster.kill_node(lose),
    )  # fmt: skip
    # the next test's run sizes itself on two worker nodes: Train's elastic view must see the new
    # one before it starts (else that run may start on 1 worker and never resize)
    local_cluster.add_node()
    local_cluster.refresh_elastic_view()
    assert elastic.returncode == 0, elastic.tail()
    assert elastic.events == ["lost", "resumed"], elastic.tail()
    print(elastic.resumed_from, elastic.times)
    metrics = json.loads((out / "metrics.json").read_text())
    printed = [line.split(maxsplit=1)[1] for line in elastic.lines if line.split(maxsplit=1)[1].startswith("{")]
    assert json.loads(printed[-1]) == metrics  # the job's summary line
    assert (metrics["resumes"], metrics["resizes"], metrics["num_workers"]) == (1, 1, 1), metrics
    if job == "compress":
        history = json.loads((out / "history.json").read_text())["user-8x"]
        assert [h["model_epoch"] for h in history] == list(range(1, OTHER_JOB_STEPS + 1))  # every epoch once
        worlds = [h["world"] for h in history]
        assert worlds[0] == 2 and worlds[-1] == 1 and worlds == sorted(worlds, reverse=True), worlds
        codes = read_codes(str(out / "compressed" / "user-8x"))  # every shard checked against its sha256
        users = read_embeddings(str(run / "embeddings" / "user"))
        assert np.array_equal(np.sort(codes.index), users.index)  # every row once: the 2 workers' shares, then 1's
    else:
        curve = json.loads((out / "curve.json").read_text())
        assert metrics["steps"] == OTHER_JOB_STEPS and [c["step"] for c in curve] == list(range(OTHER_JOB_STEPS + 1))
        synthetic, _ = read_synthetic(str(out / SYNTHETIC_DIR), verify="sha256")
        assert synthetic.shape == (8, 200) and np.isfinite(metrics["test_ndcg@5"])


def _on_one_machine(cfg: dict, checkpoints: str) -> dict:
    """A config's run on 2 gloo ranks of this process's machine, through the training function Ray Train runs."""
    return job_on_ranks("train", from_dict(TrainConfig, cfg, source="uninterrupted"), checkpoints)


def test_cluster_local_down_stops_its_nodes_and_nothing_else(local_cluster, local_ray):
    """Last: it stops the module's cluster. The embedded Ray of this process keeps running."""
    import ray

    info = local_cluster.info
    folders = [info["temp_dir"], *(w["temp_dir"] for w in info["workers"])]
    down = make("cluster-local-down", env=local_cluster.env, RAY_HEAD=local_cluster.record)
    assert down.returncode == 0 and "and its 2 worker node(s)" in down.stdout, down.stdout + down.stderr
    assert not local_cluster.record.exists()
    assert not any(Path(f).exists() for f in folders)
    assert not any(local_head.processes_under(f) for f in folders)
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
