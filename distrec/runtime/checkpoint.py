"""Every job's checkpoint I/O: ``progress.json`` (where the run stands), tensors read without
unpickling, the sharded model and fused optimizer state through torch.distributed.checkpoint, and
the files of a model replicated on every worker.

A checkpoint is a folder: each worker saves into its own local directory, and the session
(runtime/session.py) gathers every worker's directory into the same checkpoint folder, with
``progress.json`` last. What a job saves:

- TorchRec training (``save_checkpoint``): a complete DCP checkpoint (``__<rank>_0.distcp`` from
  each worker; from rank 0, DCP's ``.metadata`` and its JSON description ``dcp_metadata.json``),
  the dense optimizer state (``dense_optim.pt``, identical on every worker, saved by rank 0, with
  its parameters' names). It restores on any number of workers and under another sharding plan
  (``load_checkpoint`` through runtime/reshard.py);
- a replicated model (the dense loop, ``save_model_checkpoint``): rank 0's ``model.pt``;
- any other replicated state (``save_files``: Distill-CF's ``state.pt``, the compressor's
  ``model.safetensors`` and ``optim.pt``): rank 0 writes each file;
- state partitioned over the workers without TorchRec (ALS's factor rows,
  ``save_worker_checkpoint``): one tensor file per worker, ``worker-<rank>.pt``;

and with each, rank 0's ``progress.json`` (epoch or step, history, early-stopping state; for the
TorchRec and per-worker checkpoints ``world``, the number of workers that saved it).

Nothing read back is unpickled, and nothing is read from outside the checkpoint folder: DCP's
metadata is rebuilt from ``dcp_metadata.json`` (``distrec.runtime.dcp_metadata``; the pickled
``.metadata`` is only checked against the SHA-256 recorded there), and every file it names must
be a plain relative path inside the folder; DCP's tensors, its non-tensor entries (which DCP
itself would ``torch.load(weights_only=False)``) and every ``.pt`` file are read with
``torch.load(weights_only=True)``, ``.safetensors`` files with safetensors. A checkpoint that
breaks these rules is refused with a DataError naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Sequence
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._nested_dict import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from distrec.errors import DataError
from distrec.runtime.dcp_metadata import read_metadata, write_metadata
from distrec.runtime.reshard import dense_state, load_dense_state, reshard_request

__all__ = [
    "PROGRESS",
    "save_checkpoint",
    "load_checkpoint",
    "save_model_checkpoint",
    "load_model_checkpoint",
    "save_worker_checkpoint",
    "load_worker_checkpoint",
    "save_files",
    "require_files",
    "read_progress",
    "read_tensors",
    "load_tensors",
]

PROGRESS = "progress.json"
DENSE = "dense_optim.pt"
MODEL = "model.pt"
WORKER = "worker-{rank:05d}.pt"


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
    if _rank() == 0:
        write_metadata(directory, metadata)
    save_files(directory, {DENSE: dense_state(dmp, dense_opt)}, progress={**progress, "world": dist.get_world_size()})


def load_checkpoint(directory: str, *, dmp: torch.nn.Module, dense_opt: torch.optim.Optimizer) -> dict:
    """Restore model, fused and dense optimizer state in place, on any number of workers and
    under any plan (runtime/reshard.py); returns the saved progress."""
    require_files(directory, (DENSE, PROGRESS))
    metadata = read_metadata(directory)
    state = {"model": dmp.state_dict(), "fused": dmp.fused_optimizer.state_dict()}
    request, finish = reshard_request(state, metadata)
    try:
        dcp.load(request, storage_reader=_JsonMetadataReader(directory, metadata=metadata), planner=_SafeLoadPlanner())
    except CheckpointException as e:  # DCP gathers each rank's error; show the first
        failure = next(iter(e.failures.values()), (e, None))[0]
        if isinstance(failure, DataError):
            raise failure from None
        raise DataError(f"{directory}: cannot restore the checkpoint ({failure})") from None
    finish()
    dmp.load_state_dict(state["model"])
    dmp.fused_optimizer.load_state_dict(state["fused"])
    load_dense_state(dmp, dense_opt, read_tensors(directory, DENSE))
    return read_progress(directory)


def save_model_checkpoint(directory: str, *, model: torch.nn.Module, progress: dict) -> None:
    """A replicated model (identical on every worker): rank 0 writes it; every worker calls this."""
    save_files(directory, {MODEL: model.state_dict()}, progress=progress)


def load_model_checkpoint(directory: str, *, model: torch.nn.Module) -> dict:
    """Restore a replicated model in place; returns the saved progress."""
    require_files(directory, (MODEL, PROGRESS))
    model.load_state_dict(read_tensors(directory, MODEL))
    return read_progress(directory)


def save_files(directory: str, files: dict[str, dict[str, Any]], *, progress: dict) -> None:
    """State replicated on every worker: rank 0 writes each of ``files`` (name → state dict;
    ``.safetensors`` names hold tensors only, others go through ``torch.save``), then
    ``progress.json``. Every worker calls this with its own directory."""
    os.makedirs(directory, exist_ok=True)
    if _rank() != 0:
        return
    for name, state in files.items():
        path = os.path.join(directory, name)
        if name.endswith(".safetensors"):  # contiguous copies: the file owns its tensors
            safetensors.torch.save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, path)
        else:
            torch.save(state, path)
    with open(os.path.join(directory, PROGRESS), "w") as f:
        json.dump(progress, f)


def require_files(directory: str, names: Sequence[str]) -> None:
    """A DataError naming the first of ``names`` the checkpoint lacks."""
    for name in names:
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(f"{directory}: checkpoint is missing {name}")


def read_progress(directory: str) -> dict:
    """The saved ``progress.json``."""
    require_files(directory, (PROGRESS,))
    with open(os.path.join(directory, PROGRESS)) as f:
        return json.load(f)


def save_worker_checkpoint(directory: str, *, tensors: dict[str, torch.Tensor], progress: dict) -> None:
    """Each worker's own tensors (its rows of a partitioned model): every worker calls this with
    its own (local, empty) ``directory``; rank 0 adds ``progress.json`` with the world size, last."""
    os.makedirs(directory, exist_ok=True)
    torch.save(tensors, os.path.join(directory, WORKER.format(rank=dist.get_rank())))
    save_files(directory, {}, progress={**progress, "world": dist.get_world_size()})


def load_worker_checkpoint(directory: str) -> tuple[dict[str, torch.Tensor], dict]:
    """This worker's tensors and the saved progress. The rows of a worker depend on the world
    size, so a checkpoint written by another number of workers is refused (DataError)."""
    progress = read_progress(directory)
    world = progress.get("world")
    if world != dist.get_world_size():
        raise DataError(f"{directory}: the checkpoint was written by {world} worker(s); resume it with ray.num_workers={world}")
    mine = WORKER.format(rank=dist.get_rank())
    require_files(directory, (mine,))
    return read_tensors(directory, mine), progress


def read_tensors(directory: str, name: str) -> dict:
    """A file ``save_files`` wrote, without unpickling anything, on the CPU."""
    path = os.path.join(directory, name)
    if not name.endswith(".safetensors"):
        return load_tensors(path)
    try:
        return safetensors.torch.load_file(path)
    except safetensors.SafetensorError as e:
        raise DataError(f"{path}: not a readable safetensors file ({e})") from None


def load_tensors(path: str) -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary objects;
    on the CPU whatever device saved them (the caller copies them where its model lives)."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise DataError(f"{path}: refused ({str(e).splitlines()[0]})") from None


def _rank() -> int:
    """This worker's rank; 0 in a process without a process group (Distill-CF without Ray)."""
    return dist.get_rank() if dist.is_initialized() else 0
