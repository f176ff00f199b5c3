"""Checkpoints: the sharded model and fused optimizer state through torch.distributed.checkpoint.

Each worker saves its shards into its own local directory; Ray Train uploads every worker's
directory into the same checkpoint folder in the run's storage, which then holds a complete
DCP checkpoint (``__<rank>_0.distcp`` from each worker; from rank 0, DCP's ``.metadata`` and
its JSON description ``dcp_metadata.json``), the dense optimizer state (``dense_optim.pt``,
identical on every worker, saved by rank 0) and ``progress.json`` (epoch, history,
early-stopping state).

Models without embedding tables (the dense loop) are replicated on every worker: rank 0 saves
their ``state_dict`` as ``model.pt`` beside ``progress.json`` (``save_model_checkpoint``).

Nothing read back is unpickled, and nothing is read from outside the checkpoint folder: DCP's
metadata is rebuilt from ``dcp_metadata.json`` (``distrec.train.dcp_metadata``; the pickled
``.metadata`` is only checked against the SHA-256 recorded there), and every file it names must
be a plain relative path inside the folder; DCP's tensors, its non-tensor entries (which DCP
itself would ``torch.load(weights_only=False)``) and ``dense_optim.pt`` / ``model.pt`` are read
with ``torch.load(weights_only=True)``. A checkpoint that breaks these rules is refused with a
DataError naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._nested_dict import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from distrec.errors import DataError
from distrec.train.dcp_metadata import read_metadata, write_metadata

__all__ = ["save_checkpoint", "load_checkpoint", "save_model_checkpoint", "load_model_checkpoint", "load_tensors", "PROGRESS"]

PROGRESS = "progress.json"
DENSE = "dense_optim.pt"
MODEL = "model.pt"


class _JsonMetadataReader(FileSystemReader):
    """DCP's file reader, handed the metadata rebuilt from ``dcp_metadata.json`` instead of
    unpickling ``.metadata``."""

    def __init__(self, path: str, *, metadata: Metadata) -> None:
        super().__init__(path)
        self.metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if self.metadata.storage_meta is None:
            self.metadata.storage_meta = StorageMeta()
        self.metadata.storage_meta.load_id = self.load_id
        return self.metadata


class _SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, except that non-tensor entries load with ``weights_only=True``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise DataError(f"refused checkpoint entry {fqn!r} ({str(e).splitlines()[0]})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def save_checkpoint(directory: str, *, dmp: torch.nn.Module, dense_opt: torch.optim.Optimizer, progress: dict) -> None:
    """Every worker calls this with its own (local, empty) ``directory``."""
    os.makedirs(directory, exist_ok=True)
    state = {"model": dmp.state_dict(), "fused": dmp.fused_optimizer.state_dict()}
    metadata = dcp.save(state, checkpoint_id=directory)
    if dist.get_rank() == 0:
        write_metadata(directory, metadata)
        torch.save(dense_opt.state_dict(), os.path.join(directory, DENSE))
        with open(os.path.join(directory, PROGRESS), "w") as f:
            json.dump(progress, f)


def load_checkpoint(directory: str, *, dmp: torch.nn.Module, dense_opt: torch.optim.Optimizer) -> dict:
    """Restore model, fused and dense optimizer state in place; returns the saved progress."""
    for name in (DENSE, PROGRESS):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(f"{directory}: checkpoint is missing {name}")
    metadata = read_metadata(directory)
    state = {"model": dmp.state_dict(), "fused": dmp.fused_optimizer.state_dict()}
    try:
        dcp.load(state, storage_reader=_JsonMetadataReader(directory, metadata=metadata), planner=_SafeLoadPlanner())
    except CheckpointException as e:  # DCP gathers each rank's error; show the first
        failure = next(iter(e.failures.values()), (e, None))[0]
        if isinstance(failure, DataError):
            raise failure from None
        raise DataError(f"{directory}: cannot restore the checkpoint ({failure})") from None
    dmp.load_state_dict(state["model"])
    dmp.fused_optimizer.load_state_dict(state["fused"])
    dense_opt.load_state_dict(load_tensors(os.path.join(directory, DENSE)))
    with open(os.path.join(directory, PROGRESS)) as f:
        return json.load(f)


def save_model_checkpoint(directory: str, *, model: torch.nn.Module, progress: dict) -> None:
    """A replicated model (identical on every worker): rank 0 writes it; every worker calls this."""
    os.makedirs(directory, exist_ok=True)
    if dist.get_rank() == 0:
        torch.save(model.state_dict(), os.path.join(directory, MODEL))
        with open(os.path.join(directory, PROGRESS), "w") as f:
            json.dump(progress, f)


def load_model_checkpoint(directory: str, *, model: torch.nn.Module) -> dict:
    """Restore a replicated model in place; returns the saved progress."""
    for name in (MODEL, PROGRESS):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(f"{directory}: checkpoint is missing {name}")
    model.load_state_dict(load_tensors(os.path.join(directory, MODEL)))
    with open(os.path.join(directory, PROGRESS)) as f:
        return json.load(f)


def load_tensors(path: str) -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary objects;
    on the CPU whatever device saved them (the caller copies them where its model lives)."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise DataError(f"{path}: refused ({str(e).splitlines()[0]})") from None
