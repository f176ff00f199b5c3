"""Plan a training run for a described GPU cluster without the hardware (``jobs/plan.py``).

The training job's own planner inputs (``distrec/train/sharding.py``: the model's tables with
their fused optimizer, the config's per-table constraints, 15 % of each device held back) go to
TorchRec's ``EmbeddingShardingPlanner`` with a ``compute_device="cuda"`` topology from
``Cluster``. The planner only estimates: it enumerates sharding types × compute kernels per
table, sizes every shard with its storage estimator (weights, optimizer state, input/output
buffers), rates it with its perf estimator (bytes moved over the topology's memory and link
bandwidths, in ms) and packs shards onto ranks. In TorchRec 1.8 ``EmbeddingShardingPlanner.plan``
touches no device (the model is on the meta device, the topology is numbers; only
``collective_plan`` needs a process group), so this runs on a CPU-only machine. Guarded kernels
(SSD / key-value tables) are never proposed unless asked for, so a table that does not fit HBM
gets ``fused_uvm_caching``: rows in host memory behind an HBM cache.

A plan is a summary dict (what ``jobs/plan.py`` prints and writes as JSON): each table's
sharding type, compute kernel, ranks and memory; each rank's HBM, DDR and estimated step time;
the step estimate (the busiest rank, the number the planner minimises) and the epoch time it
implies at the global batch; and the data side (shards, prepare time at the measured rate).
A model that does not fit raises ``PlanDoesNotFit`` with the numbers and the smallest cluster of
the same GPUs that does.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner.types import PlannerError, ShardingOption, Stats

from distrec.data.prepare import PrepareConfig
from distrec.errors import UserError
from distrec.models.mf import MFConfig
from distrec.models.mf_bpr import MFBPRConfig
from distrec.models.neumf import NeuMFConfig
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.models.two_tower import TwoTowerConfig
from distrec.plan.cluster import GB, Cluster, larger_clusters
from distrec.storage import write_text
from distrec.train.config import TrainConfig
from distrec.train.sharding import RESERVED_FRACTION, attach_fused_optimizer, make_planner

__all__ = [
    "Shape",
    "PlanDoesNotFit",
    "resolve_shape",
    "plan_cluster",
    "plan_and_write",
    "smallest_cluster",
    "table_bytes",
    "PREPARE_MIB_S",
    "TEXT_BYTES_PER_RATING",
]

log = logging.getLogger(__name__)

# The data side's rate: jobs/prepare.py on the Netflix text format, 120.26 MiB/s for one prepare
# process on the 2-core benchmark machine (README, Benchmarks: prepare / netflix-text/distrec,
# 100,480,507 ratings in 16.40 s, ≈ 20.6 bytes of text a rating).
PREPARE_MIB_S = 120.26
TEXT_BYTES_PER_RATING = 20.6
PLANNABLE = (MFConfig, MFBPRConfig, NeuMFConfig, TwoTowerConfig)  # tables sized by users × items alone
OPTIMIZER_STATE = {"sgd": 0.0, "adagrad": 1.0, "adam": 2.0}  # state per weight; rowwise_adagrad: one float a row


@dataclass(frozen=True)
class Shape:
    """What is planned for: ``ratings`` (None: unknown, no epoch or data estimate), and where the
    numbers came from (a dataset URI or "--users/--items")."""

    users: int
    items: int
    ratings: int | None = None
    source: str = "--users/--items"
    shards: int | None = None  # the dataset's actual shard count, when it exists


def resolve_shape(cfg: TrainConfig, *, users: int | None, items: int | None, ratings: int | None) -> Shape:
    """``--users/--items`` (and ``--ratings``) when given, else the counts in the manifest of the
    config's ``data.path`` (read from the manifest only; no shard is opened)."""
    if (users is None) != (items is None):
        raise UserError("give both --users and --items (a hypothetical shape), or neither (the shape of data.path)")
    if users is not None and items is not None:
        if min(users, items) < 1 or (ratings is not None and ratings < 1):
            raise UserError("--users, --items and --ratings must be positive")
        return Shape(users=users, items=items, ratings=ratings)
    dataset = cfg.data.open()
    return Shape(
        users=dataset.num_users,
        items=dataset.num_items,
        ratings=ratings or int(dataset.meta["ratings"]),
        source=cfg.data.path,
        shards=len(dataset.parts),
    )


class PlanDoesNotFit(UserError):
    """The tables do not fit the described cluster; the message has the numbers."""


class _Chosen(Stats):
    """Keeps the planner's chosen sharding options (TorchRec calls every ``Stats`` with them)."""

    options: list[ShardingOption] | None = None

    def log(
        self,
        sharding_plan,
        topology,
        batch_size,
        storage_reservation,
        num_proposals,
        num_plans,
        run_time,
        best_plan,
        *args,
        **kwargs,
    ) -> None:  # type: ignore[override]
        self.options = list(best_plan) if sharding_plan.plan else None  # a failed plan is logged with an empty plan


def _model(cfg: TrainConfig, shape: Shape) -> torch.nn.Module:
    if not isinstance(cfg.model, PLANNABLE):
        names = sorted(c.name for c in (c() for c in PLANNABLE))
        raise UserError(
            f"model.name={cfg.model.name}: jobs/plan.py plans models whose tables depend only on the users and items "
            f"({', '.join(names)})"
        )
    ctx = ModelContext(num_users=shape.users, num_items=shape.items, global_mean=0.0)
    model = build_model(cfg.model, ctx, torch.device("meta"))
    attach_fused_optimizer(model, cfg.optim, torch.device("cuda"))  # a device type only: nothing is allocated
    return model


def table_bytes(cfg: TrainConfig, shape: Shape) -> dict[str, int]:
    """Each table's weights plus its optimizer state, in bytes (float32): the least any plan holds."""
    out = {}
    for t in _model(cfg, shape).tables:
        state = 1.0 / t.width if cfg.optim.sparse == "rowwise_adagrad" else OPTIMIZER_STATE[cfg.optim.sparse]
        out[t.name] = int(t.rows * t.width * 4 * (1 + state))
    return out


def _plan_options(cfg: TrainConfig, cluster: Cluster, shape: Shape, per_gpu_batch: int) -> list[ShardingOption] | None:
    model = _model(cfg, shape)
    chosen = _Chosen()
    planner = make_planner(
        model.tables, sharding=cfg.sharding, topology=cluster.topology(), batch_size=per_gpu_batch, stats=[chosen]
    )
    try:
        planner.plan(model, [EmbeddingBagCollectionSharder()])
    except PlannerError as e:
        log.info("%s: no plan (%s)", cluster.describe(), str(e).splitlines()[0])
        return None
    return chosen.options


def _per_gpu_batch(cfg: TrainConfig, cluster: Cluster, global_batch: int | None) -> int:
    rows = cfg.train.global_batch(cluster.world) if global_batch is None else global_batch
    return max(1, math.ceil(rows / cluster.world))


def _summary(
    options: list[ShardingOption], cfg: TrainConfig, cluster: Cluster, shape: Shape, per_gpu_batch: int
) -> dict[str, Any]:
    ranks = [{"rank": r, "hbm_bytes": 0, "ddr_bytes": 0, "step_ms": 0.0} for r in range(cluster.world)]
    breakdown = [dict.fromkeys(("fwd_compute", "fwd_comms", "bwd_compute", "bwd_comms", "prefetch_compute"), 0.0) for _ in ranks]
    tables = []
    for so in options:
        for shard in so.shards:
            rank = ranks[shard.rank]
            rank["hbm_bytes"] += shard.storage.hbm
            rank["ddr_bytes"] += shard.storage.ddr
            rank["step_ms"] += shard.perf.total
            for k in breakdown[shard.rank]:
                breakdown[shard.rank][k] += getattr(shard.perf, k)
        rows, width = so.tensor.shape
        tables.append(
            {
                "name": so.name,
                "rows": int(rows),
                "width": int(width),
                "sharding_type": so.sharding_type,
                "compute_kernel": so.compute_kernel,
                "shards": len(so.shards),
                "ranks": sorted({s.rank for s in so.shards}),
                "hbm_bytes": sum(s.storage.hbm for s in so.shards),
                "ddr_bytes": sum(s.storage.ddr for s in so.shards),
                "step_ms": max(s.perf.total for s in so.shards),  # its shards run side by side
            }
        )
    busiest = max(range(len(ranks)), key=lambda r: ranks[r]["step_ms"])
    step_ms = ranks[busiest]["step_ms"]
    global_batch = per_gpu_batch * cluster.world
    estimate: dict[str, Any] = {"step_ms": step_ms, "busiest_rank": busiest, "busiest_rank_ms": breakdown[busiest]}
    data: dict[str, Any] = {"ratings": shape.ratings}
    if shape.ratings:
        steps = math.ceil(shape.ratings / global_batch)
        estimate.update(steps_per_epoch=steps, epoch_s=steps * step_ms / 1000)
        data.update(
            shards=shape.shards or math.ceil(shape.ratings / PrepareConfig.rows_per_shard),
            text_bytes=int(shape.ratings * TEXT_BYTES_PER_RATING),
            prepare_s=shape.ratings * TEXT_BYTES_PER_RATING / (PREPARE_MIB_S * 2**20),
            prepare_mib_s=PREPARE_MIB_S,
        )
    return {
        "fits": True,
        "cluster": cluster.as_dict(),
        "shape": {"users": shape.users, "items": shape.items, "ratings": shape.ratings, "source": shape.source},
        "model": {"name": cfg.model.name, "dim": getattr(cfg.model, "dim", None), "sparse_optimizer": cfg.optim.sparse},
        "batch": {"per_gpu": per_gpu_batch, "global": global_batch},
        "caps": {
            "hbm_bytes_per_gpu": cluster.hbm_bytes,
            "hbm_bytes_for_tables": int(cluster.hbm_bytes * (1 - RESERVED_FRACTION)),
            "ddr_bytes_per_gpu": cluster.ddr_bytes_per_rank,
            "reserved_fraction": RESERVED_FRACTION,
        },
        "tables": tables,
        "ranks": ranks,
        "estimate": estimate,
        "data": data,
    }


def smallest_cluster(
    cfg: TrainConfig, like: Cluster, shape: Shape, *, global_batch: int | None = None, max_nodes: int = 1024
) -> tuple[Cluster, dict[str, Any]] | None:
    """The cluster with the fewest of ``like``'s GPUs (then nodes) the planner fits the tables on,
    with its plan; clusters whose total memory cannot hold the tables' weights and optimizer state
    are skipped without asking the planner. None when nothing up to ``max_nodes`` nodes fits."""
    need = sum(table_bytes(cfg, shape).values())
    for cluster in larger_clusters(like, max_nodes=max_nodes):
        room = cluster.world * (cluster.hbm_bytes * (1 - RESERVED_FRACTION) + cluster.ddr_bytes_per_rank)
        if room < need:
            continue
        batch = _per_gpu_batch(cfg, cluster, global_batch)
        options = _plan_options(cfg, cluster, shape, batch)
        if options is not None:
            return cluster, _summary(options, cfg, cluster, shape, batch)
    return None


def plan_cluster(
    cfg: TrainConfig,
    cluster: Cluster,
    shape: Shape,
    *,
    global_batch: int | None = None,
    smallest: bool = False,
    max_nodes: int = 1024,
) -> dict[str, Any]:
    """The planner's plan for ``cluster`` (``smallest``: for the smallest cluster of its GPUs that
    fits). ``global_batch``: rows per step over all GPUs (None: the config's, ``train.global_batch_size``
    or ``train.batch_size`` per GPU).
    Raises ``PlanDoesNotFit`` naming what the tables need, what the cluster has and the smallest
    cluster that would do."""
    if global_batch is not None and global_batch < 1:
        raise UserError(f"--global-batch must be positive, got {global_batch}")
    if smallest:
        found = smallest_cluster(cfg, cluster, shape, global_batch=global_batch, max_nodes=max_nodes)
        if found is None:
            raise PlanDoesNotFit(_refusal(cfg, cluster, shape, None, max_nodes))
        return found[1]
    batch = _per_gpu_batch(cfg, cluster, global_batch)
    options = _plan_options(cfg, cluster, shape, batch)
    if options is not None:
        return _summary(options, cfg, cluster, shape, batch)
    found = smallest_cluster(cfg, cluster, shape, global_batch=global_batch, max_nodes=max_nodes)
    raise PlanDoesNotFit(_refusal(cfg, cluster, shape, found, max_nodes))


def plan_and_write(
    cfg: TrainConfig,
    cluster: Cluster,
    *,
    users: int | None = None,
    items: int | None = None,
    ratings: int | None = None,
    global_batch: int | None = None,
    smallest: bool = False,
    out: str | None = None,
) -> dict[str, Any]:
    """``jobs/plan.py``'s body: the shape, the plan, and the plan as JSON at ``out`` (any URI;
    nothing is written when the plan does not fit)."""
    shape = resolve_shape(cfg, users=users, items=items, ratings=ratings)
    plan = plan_cluster(cfg, cluster, shape, global_batch=global_batch, smallest=smallest)
    if out:
        write_text(out, json.dumps(plan, indent=1))
    return plan


def _refusal(cfg: TrainConfig, cluster: Cluster, shape: Shape, found: tuple[Cluster, dict] | None, max_nodes: int) -> str:
    sizes = table_bytes(cfg, shape)
    tables = ", ".join(f"{name} {b / GB:,.1f}" for name, b in sizes.items())
    has = (
        f"{cluster.describe()} with {cluster.hbm_gb:g} GiB HBM per GPU "
        f"({(1 - RESERVED_FRACTION) * cluster.hbm_gb:,.1f} GiB for tables "
        f"after the {RESERVED_FRACTION:.0%} reserve) and {cluster.ddr_bytes_per_rank / GB:,.1f} GiB host memory per GPU "
        f"({cluster.world * ((1 - RESERVED_FRACTION) * cluster.hbm_gb + cluster.ddr_bytes_per_rank / GB):,.1f} GiB in all)"
    )
    text = (
        f"the embedding tables of {cfg.model.name} for {shape.users:,} users × {shape.items:,} items do not fit: "
        "they need at least "
        f"{sum(sizes.values()) / GB:,.1f} GiB of weights and {cfg.optim.sparse} state (GiB per table: {tables}), and the planner "
        f"found no placement on {has}. "
    )
    if found is None:
        return text + f"No cluster of these GPUs up to {max_nodes} node(s) of {cluster.gpus_per_node} fits."
    smallest, plan = found
    kinds = ", ".join(sorted({f"{t['sharding_type']}/{t['compute_kernel']}" for t in plan["tables"]}))
    most = max(r["hbm_bytes"] for r in plan["ranks"]) / GB
    return text + (
        f"The smallest cluster of these GPUs that fits: --nodes {smallest.nodes} --gpus-per-node {smallest.gpus_per_node} "
        f"({smallest.world} GPU(s); {kinds}; up to {most:,.1f} GiB HBM per GPU; est. step {plan['estimate']['step_ms']:.2f} ms)."
    )
