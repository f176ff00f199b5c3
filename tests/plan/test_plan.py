"""jobs/plan.py: TorchRec's planner plans for GPU clusters on this CPU-only machine.

Netflix and ML-25M shapes and a 1-billion-user × 100-million-item shape, MF at dim 128 with
row-wise Adagrad, on 1, 8 and 64 GPUs (80 GiB HBM, 512 GiB host memory per node): every table
placed, memory within the caps, a table larger than one GPU split by rows (or, where HBM does not
hold the tables, kept in host memory: UVM, UVM caching), and a refusal that names the numbers and a cluster that fits.
"""

from __future__ import annotations

import json
import re

import pytest

from distrec.config import load_config
from distrec.plan.capacity import PlanDoesNotFit, Shape, plan_cluster, smallest_cluster, table_bytes
from distrec.plan.cluster import Cluster
from distrec.train.config import TrainConfig
from jobs.plan import main as plan_job
from tests.helpers import tiny_synthetic

NETFLIX = Shape(users=480_189, items=17_770, ratings=100_480_507)
ML25M = Shape(users=162_541, items=59_047, ratings=25_000_095)
BILLION = Shape(users=1_000_000_000, items=100_000_000, ratings=100_000_000_000)
TOPOLOGIES = {
    "1x1": Cluster(nodes=1, gpus_per_node=1),
    "1x8": Cluster(nodes=1, gpus_per_node=8),
    "8x8": Cluster(nodes=8, gpus_per_node=8),
}


def _config(**extra: str) -> TrainConfig:
    overrides = ["model.dim=128", *(f"{k}={v}" for k, v in extra.items())]
    return load_config(TrainConfig, "configs/mf/netflix.yaml", overrides)


def _check_plan(plan: dict, cfg: TrainConfig, cluster: Cluster, shape: Shape) -> None:
    """What must hold for any plan: each table placed whole on the cluster's ranks, each rank
    within its HBM (after the reserve) and host memory, a positive step estimate."""
    sizes = table_bytes(cfg, shape)
    assert {t["name"] for t in plan["tables"]} == set(sizes) == {"user", "item", "user_bias", "item_bias"}
    for t in plan["tables"]:
        assert t["shards"] >= 1 and t["ranks"] and all(0 <= r < cluster.world for r in t["ranks"])
        assert t["hbm_bytes"] + t["ddr_bytes"] >= sizes[t["name"]] * 0.99  # every row (and its optimizer state) is somewhere
    caps = plan["caps"]
    assert len(plan["ranks"]) == cluster.world
    for r in plan["ranks"]:
        assert r["hbm_bytes"] <= caps["hbm_bytes_for_tables"] <= cluster.hbm_bytes
        assert r["ddr_bytes"] <= caps["ddr_bytes_per_gpu"]
    assert plan["estimate"]["step_ms"] > 0 and plan["estimate"]["epoch_s"] > 0
    assert plan["batch"]["global"] == plan["batch"]["per_gpu"] * cluster.world
    for t in plan["tables"]:  # a table larger than one GPU's HBM for tables is split by rows or kept in host memory
        if sizes[t["name"]] > caps["hbm_bytes_for_tables"]:
            split = t["sharding_type"] in ("row_wise", "table_row_wise") and t["shards"] > 1
            assert split or t["compute_kernel"] in ("fused_uvm", "fused_uvm_caching"), t


@pytest.mark.parametrize("shape", [NETFLIX, ML25M], ids=["netflix", "ml-25m"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_dataset_shapes_fit_every_cluster_in_hbm(shape, topology):
    cfg, cluster = _config(), TOPOLOGIES[topology]
    plan = plan_cluster(cfg, cluster, shape)
    _check_plan(plan, cfg, cluster, shape)
    assert all(t["compute_kernel"] == "fused" and t["ddr_bytes"] == 0 for t in plan["tables"])  # small tables: all in HBM
    assert plan["data"]["shards"] == -(-shape.ratings // 4_000_000)


def test_a_billion_users_on_64_gpus_are_split_by_rows_in_hbm():
    cfg, cluster = _config(), TOPOLOGIES["8x8"]
    plan = plan_cluster(cfg, cluster, BILLION, global_batch=131_072)
    _check_plan(plan, cfg, cluster, BILLION)
    user = next(t for t in plan["tables"] if t["name"] == "user")
    assert table_bytes(cfg, BILLION)["user"] > cluster.hbm_bytes  # larger than one GPU ...
    assert user["sharding_type"] in ("row_wise", "table_row_wise") and user["shards"] >= 8  # ... so split by rows
    assert all(t["compute_kernel"] == "fused" and t["ddr_bytes"] == 0 for t in plan["tables"])  # all in HBM
    assert plan["batch"] == {"per_gpu": 2048, "global": 131_072}
    assert plan["estimate"]["steps_per_epoch"] == -(-BILLION.ratings // 131_072)


def test_a_billion_users_on_8_gpus_cache_the_user_table_in_hbm():
    """8 × 80 GiB do not hold the 481 GiB user table plus the rest: its rows go to host memory
    behind an HBM cache (UVM caching), still split by rows."""
    cfg, cluster = _config(), TOPOLOGIES["1x8"]
    plan = plan_cluster(cfg, cluster, BILLION)
    _check_plan(plan, cfg, cluster, BILLION)
    assert sum(table_bytes(cfg, BILLION).values()) > cluster.world * plan["caps"]["hbm_bytes_for_tables"]
    user = next(t for t in plan["tables"] if t["name"] == "user")
    assert user["compute_kernel"] == "fused_uvm_caching" and user["ddr_bytes"] > 0
    assert user["sharding_type"] in ("row_wise", "table_row_wise")


def test_a_billion_users_on_one_gpu_are_refused_with_the_numbers_and_a_cluster_that_fits():
    cfg, cluster = _config(), TOPOLOGIES["1x1"]
    with pytest.raises(PlanDoesNotFit) as refused:
        plan_cluster(cfg, cluster, BILLION)
    message = str(refused.value)
    need = sum(table_bytes(cfg, BILLION).values()) / 2**30
    assert f"{need:,.1f} GiB" in message and "user 480.6" in message and "68.0 GiB for tables" in message
    nodes, gpus = map(int, re.search(r"--nodes (\d+) --gpus-per-node (\d+)", message).groups())
    suggested = Cluster(nodes=nodes, gpus_per_node=gpus)
    assert suggested.world > 1
    _check_plan(plan_cluster(cfg, suggested, BILLION), cfg, suggested, BILLION)  # the suggestion does fit
    if suggested.world > 2:  # and it is the smallest: one GPU fewer does not
        with pytest.raises(PlanDoesNotFit):
            plan_cluster(
                cfg,
                Cluster(nodes=nodes - 1, gpus_per_node=gpus)
                if gpus == 1
                else Cluster(nodes=1, gpus_per_node=suggested.world // 2),
                BILLION,
            )


def test_smallest_cluster_search_and_nothing_fits():
    cfg = _config()
    found = smallest_cluster(cfg, Cluster(nodes=1, gpus_per_node=8), BILLION)
    assert found is not None
    cluster, plan = found
    assert cluster.world in (4, 8) and plan["cluster"]["gpus"] == cluster.world  # 549 GiB: over 4 × 68 GiB of HBM, so UVM caching
    with pytest.raises(PlanDoesNotFit, match=r"No cluster of these GPUs up to 1 node\(s\) of 1 fits"):
        plan_cluster(cfg, Cluster(nodes=1, gpus_per_node=1), BILLION, max_nodes=1)


def test_job_prints_and_writes_the_plan_and_refuses_with_exit_2(tmp_path, capsys):
    out = tmp_path / "plan.json"
    args = [
        "--config",
        "configs/mf/netflix.yaml",
        "--users",
        "162541",
        "--items",
        "59047",
        "--ratings",
        "25000095",
        "--nodes",
        "1",
        "--gpus-per-node",
        "8",
        "--global-batch",
        "65536",
        "--out",
        str(out),
        "model.dim=128",
    ]
    assert plan_job(args) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert json.loads(printed.strip().splitlines()[-1]) == written
    assert "sharding" in printed and "not a measurement" in printed and "GPU 0" in printed
    assert written["batch"] == {"per_gpu": 8192, "global": 65536} and written["cluster"]["gpus"] == 8

    refused = tmp_path / "refused.json"
    code = plan_job(
        [
            "--config",
            "configs/mf/netflix.yaml",
            "--users",
            "1000000000",
            "--items",
            "100000000",
            "--nodes",
            "1",
            "--gpus-per-node",
            "1",
            "--out",
            str(refused),
            "model.dim=128",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "do not fit" in err and "--nodes" in err and not refused.exists()
    assert plan_job(["--config", "configs/mf/netflix.yaml", "--users", "10"]) == 2
    assert "give both --users and --items" in capsys.readouterr().err
    assert plan_job(["--config", "configs/glocal_k/ml-100k.yaml", "--users", "10", "--items", "10"]) == 2  # no embedding tables
    assert "plans models whose tables depend only on the users and items" in capsys.readouterr().err


def test_shape_comes_from_the_dataset_manifest(tmp_path, capsys):
    data = str(tmp_path / "data")
    summary = tiny_synthetic(data, users=300, items=200, ratings=20_000)
    assert plan_job(["--config", "configs/mf/netflix.yaml", f"data.path={data}", "--nodes", "1", "--gpus-per-node", "2"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["shape"] == {"users": summary["users"], "items": summary["items"], "ratings": summary["ratings"], "source": data}
    assert plan["data"]["shards"] == -(-summary["ratings"] // 6000) > 1  # the dataset's own shards (6,000 rows each)
