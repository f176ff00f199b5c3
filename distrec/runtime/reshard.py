"""Resharding: a table checkpoint saved by W workers restored on W′ workers, or under other sharding types.

The restoring workers plan their own sharding (TorchRec's planner, for W′); what the checkpoint
holds is mapped onto that plan here, exactly where the saved state allows it.

What DCP maps by itself. TorchRec's state dicts are ShardedTensors with global offsets: a
table's weight is [rows, width] however it is split, and an element-wise optimizer state
(Adagrad's sums of squared gradients) has the weight's shape and split. DCP's load planner reads
each new shard out of whichever saved chunks overlap it, so these load into any plan, any
world size, table-wise or column-wise, bit for bit. So do a data-parallel table (a plain
tensor, replicated: saved once, read whole), the dense parameters (replicated) and the dense
optimizer's state (``dense_optim.pt``, the same on every worker; its parameters are matched by
name, ``dense_state``/``load_dense_state``, so a table that becomes or stops being
data-parallel, and with it a dense parameter, leaves the others' state in place).

What DCP cannot map, converted here: row-wise Adagrad under another column split. fbgemm keeps
one accumulator per row *per column shard*: each shard's kernel adds the mean over its own
columns of the squared gradient. TorchRec names a table's accumulators as one tensor of
k × rows values (k column shards; shard j, by first column, at j × rows), so a table-wise table
has [rows] and the same table split in two columns has [2 · rows], sizes DCP refuses to map. Such an
entry is read whole instead (a plain tensor of its saved size), the saved weight's chunks say
which columns each saved accumulator covered, and each new shard j gets the column-weighted mean
of the saved accumulators its columns overlap:

    m′_j[r] = Σ_i |cols_i ∩ cols′_j| · m_i[r] / |cols′_j|        (in float64, then float32)

When shards merge (column-wise → table-wise) this is exact: it is what the merged kernel would
have accumulated, the mean over all its columns of the summed squared gradients. When a shard
splits (table-wise → column-wise) each part gets the whole row's accumulator: how the squared
gradients were spread over the columns was never recorded, by TorchRec or by any state one
could save beside it, so no load can do better. (Training under another column split follows
another trajectory from then on anyway: each shard adapts its own learning rate.) The same
column split on another number of workers needs no conversion: DCP maps it.

Other cases: a table whose optimizer changes with its layout (data-parallel tables are updated
by the dense optimizer, sharded ones by the fused embedding optimizer) keeps its weights and
starts its optimizer state afresh, with a warning; a worker that holds no shard of any table
(three workers, two tables) restores no fused optimizer state at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

__all__ = ["reshard_request", "dense_state", "load_dense_state", "resume_message"]

log = logging.getLogger(__name__)

Columns = list[tuple[int, int]]  # column ranges (first column, width), by first column


def reshard_request(state: dict[str, Any], metadata: Metadata) -> tuple[dict[str, Any], Callable[[], None]]:
    """What to hand ``dcp.load`` to restore ``state`` (``{"model": dmp.state_dict(), "fused":
    dmp.fused_optimizer.state_dict()}`` of this worker's plan) from the checkpoint ``metadata``
    describes, and what to call after it to finish ``state`` (the converted accumulators).

    The request holds ``state``'s own tensors, which DCP fills in place, except: a row-wise
    accumulator saved under another column split, replaced by a plain tensor of its saved size
    (every saved accumulator, converted by the returned call); fused state the checkpoint lacks
    (the table was data-parallel), left as it is; and empty containers (a worker without any
    table shard), which DCP cannot restore."""
    fused_state: dict[str, dict[str, Any]] = state["fused"].get("state", {})
    conversions: list[_Conversion] = []
    fused: dict[str, dict[str, Any]] = {}
    for param, entries in fused_state.items():
        for key, value in entries.items():
            fqn = f"fused.state.{param}.{key}"
            saved = metadata.state_dict_metadata.get(fqn)
            if saved is None:
                log.warning(
                    "%s: not in the checkpoint (the table was data-parallel, or had another optimizer); this state restarts", fqn
                )
                continue
            conversion = _rowwise_conversion(fqn, value, saved, weight=state["model"].get(param), metadata=metadata, param=param)
            if conversion is not None:
                conversions.append(conversion)
                value = conversion.saved
            fused.setdefault(param, {})[key] = value
    request: dict[str, Any] = {"model": state["model"]}
    if fused:
        request["fused"] = {**state["fused"], "state": fused}

    def finish() -> None:
        for conversion in conversions:
            conversion.apply()

    return request, finish


@dataclass(frozen=True)
class _Conversion:
    """One table's row-wise accumulators from the saved column split to this plan's."""

    target: ShardedTensor  # this worker's accumulators: [k′ · rows], shard j of the columns at j · rows
    saved: torch.Tensor  # every saved accumulator, [k · rows] (DCP fills it)
    saved_columns: Columns
    columns: Columns
    rows: int

    def apply(self) -> None:
        for shard in self.target.local_shards():
            (offset,), (n,) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            j, row = divmod(offset, self.rows)
            first, width = self.columns[j]
            total = torch.zeros(n, dtype=torch.float64)
            for i, (c, w) in enumerate(self.saved_columns):
                overlap = min(first + width, c + w) - max(first, c)
                if overlap > 0:
                    start = i * self.rows + row
                    total += overlap * self.saved[start : start + n].double()
            shard.tensor.copy_(total / width)


def _rowwise_conversion(fqn: str, value: Any, saved: Any, *, weight: Any, metadata: Metadata, param: str) -> _Conversion | None:
    """The conversion a row-wise accumulator needs, or None where DCP maps it (the same column
    split; not a row-wise state of a sharded table) or refuses it (sizes that are not one
    accumulator per row and column shard: another table). DCP's refusals reach every worker
    (it gathers each worker's planning errors); one raised here would reach only those holding
    the table, while the others wait in the load."""
    saved_weight = metadata.state_dict_metadata.get(f"model.{param}")
    if not (
        isinstance(value, ShardedTensor)
        and value.dim() == 1
        and isinstance(weight, ShardedTensor)
        and isinstance(saved, TensorStorageMetadata)
        and len(saved.size) == 1
        and isinstance(saved_weight, TensorStorageMetadata)
    ):
        return None
    rows = weight.size(0)
    columns = sorted({(int(m.shard_offsets[1]), int(m.shard_sizes[1])) for m in weight.metadata().shards_metadata})
    saved_columns = sorted({(int(c.offsets[1]), int(c.sizes[1])) for c in saved_weight.chunks})
    if columns == saved_columns or saved.size[0] != len(saved_columns) * rows or value.size(0) != len(columns) * rows:
        return None
    return _Conversion(target=value, saved=torch.empty(saved.size[0], dtype=saved.properties.dtype),
                       saved_columns=saved_columns, columns=columns, rows=rows)  # fmt: skip


def dense_state(dmp: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The dense optimizer's ``state_dict`` with each group's parameter names (``param_names``,
    torch's own key), so that it can be restored into another set of dense parameters."""
    state = opt.state_dict()
    for group, names in zip(state["param_groups"], _param_names(dmp, opt), strict=True):
        group["param_names"] = names
    return state


def load_dense_state(dmp: torch.nn.Module, opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Restore ``dense_state``'s output (or a plain ``state_dict``) into ``opt``, parameters
    matched by name: a parameter the checkpoint lacks (a table now data-parallel) starts afresh,
    one it has but ``opt`` lacks (a table now sharded) is dropped, each with a warning."""
    groups = saved["param_groups"]
    current = _param_names(dmp, opt)
    if len(groups) != len(current) or any("param_names" not in g for g in groups):
        opt.load_state_dict(saved)  # by position, as saved before parameter names were
        return
    state, remapped, index = {}, [], 0
    for group, names in zip(groups, current, strict=True):
        where = dict(zip(group["param_names"], group["params"], strict=True))
        for name in names:
            if name not in where:
                _warn_rank0(
                    "dense parameter %s: not in the checkpoint's dense optimizer (the table was sharded); its state restarts",
                    name,
                )
            elif where[name] in saved["state"]:
                state[index] = saved["state"][where[name]]
            index += 1
        for name in sorted(set(where) - set(names)):
            _warn_rank0(
                "dense parameter %s of the checkpoint is not dense any more (the table is sharded); its state restarts", name
            )
        hyper = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        remapped.append({**hyper, "params": list(range(index - len(names), index))})
    opt.load_state_dict({"state": state, "param_groups": remapped})


def _param_names(dmp: torch.nn.Module, opt: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in dmp.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in opt.param_groups]


def _warn_rank0(message: str, *args: Any) -> None:
    if dist.get_rank() == 0:
        log.warning(message, *args)


def resume_message(
    checkpoint: str, progress: dict[str, Any], world: int, where: str | None = None, resized: str = "tables resharded"
) -> str:
    """What rank 0 prints on resuming: where from (``where``, by default "epoch N"), and whether the
    run goes on with another number of workers (``progress["world"]``: the workers that saved it;
    absent in checkpoints from before it was recorded) and what that changed (``resized``)."""
    saved = progress.get("world", world)
    where = where or f"epoch {progress['epoch']}"
    if saved == world:
        return f"resumed from {checkpoint} after {where}"
    return f"resumed from {where} (saved by {saved} worker{'s' * (saved != 1)}, now {world}: {resized})"
