"""Sharding: TorchRec's planner picks a plan, DistributedModelParallel applies it.

The model is built unsharded on the meta device (no memory), its embedding tables get their
fused optimizer, the planner plans for the real world size and device, and DMP materialises
only each worker's shards. On CPU the planner may use table-wise, column-wise and
data-parallel sharding (row-wise needs GPUs); a table can be pinned to one type in the config.
Lookups check their ids against the table (fbgemm's ``BoundsCheckMode.FATAL``): an id beyond it
raises instead of being read, and trained, as row 0.

Gradients: each worker's loss is the mean over its own batch. DDP averages the dense
gradients over workers, and TorchRec divides the embedding gradients it sends back to each
row's owner by the world size (``comm_ops.GRADIENT_DIVISION``), so both are the gradients of
the mean over the global batch: one worker or four, the same rows give the same update.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, PlannerError, Topology, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from distrec.errors import UserError
from distrec.models.tables import TableSpec, init_rows
from distrec.train.config import ADAM_ON_CPU, CPU_SHARDING_TYPES, SHARDING_TYPES, OptimConfig, ShardingConfig

__all__ = [
    "shard_model",
    "plan_text",
    "local_table_pieces",
    "fused_optimizer_class",
    "attach_fused_optimizer",
    "make_planner",
    "RESERVED_FRACTION",
]

log = logging.getLogger(__name__)

RESERVED_FRACTION = 0.15  # of each device's memory the planner leaves to dense parameters and activations


def fused_optimizer_class(cfg: OptimConfig, device: torch.device) -> tuple[type, dict]:
    """The optimizer TorchRec fuses into the embedding backward, and its arguments."""
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    if cfg.sparse == "adam" and device.type == "cpu":
        raise UserError(ADAM_ON_CPU)
    kinds = {
        "sgd": (torch.optim.SGD, {"lr": cfg.sparse_lr}),
        "adagrad": (torch.optim.Adagrad, {"lr": cfg.sparse_lr, "eps": cfg.eps}),
        "rowwise_adagrad": (RowWiseAdagrad, {"lr": cfg.sparse_lr, "eps": cfg.eps}),
        "adam": (torch.optim.Adam, {"lr": cfg.sparse_lr, "eps": cfg.eps}),
    }
    return kinds[cfg.sparse]


def attach_fused_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> None:
    """Give the model's embedding tables the optimizer TorchRec fuses into their backward (the
    planner sizes each table's optimizer state from it)."""
    opt_class, opt_args = fused_optimizer_class(optim, device)
    apply_optimizer_in_backward(opt_class, model.sparse.parameters(), opt_args)


def make_planner(
    tables: list[TableSpec],
    *,
    sharding: ShardingConfig,
    topology: Topology,
    batch_size: int | None = None,
    stats: list | None = None,
) -> EmbeddingShardingPlanner:
    """TorchRec's planner for ``tables`` on ``topology`` with the config's per-table constraints and
    ``RESERVED_FRACTION`` of each device's memory held back. ``batch_size``: rows per worker per
    step (None: TorchRec's default of 512); ``stats``: TorchRec ``Stats`` that see the chosen plan."""
    return EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        constraints=_constraints(tables, sharding, topology.compute_device),
        storage_reservation=FixedPercentageStorageReservation(RESERVED_FRACTION),
        stats=stats,
    )


def _constraints(tables: list[TableSpec], cfg: ShardingConfig, device_type: str) -> dict[str, ParameterConstraints]:
    allowed = CPU_SHARDING_TYPES if device_type == "cpu" else SHARDING_TYPES
    names = {t.name for t in tables}
    unknown = set(cfg.types) - names
    if unknown:
        raise UserError(f"sharding.types names tables {sorted(unknown)}; this model's tables are {sorted(names)}")
    out = {}
    for t in tables:
        if t.name in cfg.types:
            kind = cfg.types[t.name]
            if kind not in allowed:
                raise UserError(f"sharding.types.{t.name}={kind} needs GPUs; on CPU use one of {list(CPU_SHARDING_TYPES)}")
            out[t.name] = ParameterConstraints(sharding_types=[kind])
        else:  # data-parallel tables fall back to the dense optimizer, so only when asked for
            out[t.name] = ParameterConstraints(sharding_types=[k for k in allowed if k != "data_parallel"])
    return out


def shard_model(
    model: nn.Module,
    *,
    optim: OptimConfig,
    sharding: ShardingConfig,
    device: torch.device,
    seed: int,
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Fused optimizer on the tables, a plan from the planner, DMP, then deterministic init."""
    world = dist.get_world_size()
    attach_fused_optimizer(model, optim, device)
    budget = {}
    if sharding.memory_budget_gb is not None:
        key = "ddr_cap_bytes" if device.type == "cpu" else "hbm_cap_bytes"
        budget[key] = int(sharding.memory_budget_gb * (1 << 30))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=world, local_world_size=local_world, **budget),
        kernel_config=KernelConfig(compute_device=device.type),
    )
    planner = make_planner(model.tables, sharding=sharding, topology=topology)
    # fbgemm's default bounds check logs "Out of bounds ... Setting idx to zero" and trains row 0
    # instead; an id beyond its table is a bug or bad data, never something to train through.
    sharders = [EmbeddingBagCollectionSharder(fused_params={"bounds_check_mode": BoundsCheckMode.FATAL})]
    try:
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    except PlannerError as e:
        sizes = ", ".join(f"{t.name}: {t.rows:,}×{t.width} ({t.rows * t.width * 4 / 2**30:.2f} GiB)" for t in model.tables)
        raise UserError(
            f"the embedding tables do not fit {world} worker(s) (tables {sizes}; memory budget "
            f"{sharding.memory_budget_gb or 'machine default'} GiB per worker). Add workers, lower model.dim, "
            f"or raise sharding.memory_budget_gb. Planner: {str(e).splitlines()[0]}"
        ) from None
    dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)
    _init_tables(dmp, model.tables, seed)
    return dmp, plan


def plan_text(plan: ShardingPlan) -> str:
    return str(plan)


def _table_key(name: str) -> str:
    return f"sparse.embedding_bags.{name}.weight"


def local_table_pieces(
    dmp: DistributedModelParallel, table: str, *, every_replica: bool = False
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """This worker's pieces of a table as ``(first row, first column, tensor view)``.

    A data-parallel table is whole on every worker; unless ``every_replica``, only rank 0
    yields it, so summing the pieces of all workers rebuilds each table exactly once."""
    value = dmp.state_dict()[_table_key(table)]
    if hasattr(value, "local_shards"):
        for shard in value.local_shards():
            row, col = shard.metadata.shard_offsets
            yield row, col, shard.tensor
    elif every_replica or dist.get_rank() == 0:
        yield 0, 0, value


def _init_tables(dmp: DistributedModelParallel, tables: list[TableSpec], seed: int) -> None:
    with torch.no_grad():
        for spec in tables:
            for row, col, tensor in local_table_pieces(dmp, spec.name, every_replica=True):
                rows, cols = tensor.shape
                tensor.copy_(init_rows(spec, seed, row, row + rows)[:, col : col + cols])
