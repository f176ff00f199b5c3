"""The compressor's per-worker run, top to bottom:

    resume? → for each table: this worker's slice (ranged reads) → held-out rows out → feature
    statistics (all workers) → for each ratio: model → DDP → epochs (checkpoint + report every
    ``fit.checkpoint_every``) → encode this worker's rows → write its code shard → rank 0 commits
    codes + encoder/decoder weights + manifest

Plain torch DDP over the process group Ray Train set up (gloo on CPU; NCCL for GPU tensors),
on ``model.device`` (auto: the worker's GPU when Ray gave it one), resolved once per worker; a
step's loss is summed on the device and read once an epoch. Each worker's loss is
normalised by the number of real rows in the global batch, so DDP's gradient averaging gives
exactly the gradient of the global batch mean whatever the slices' sizes. It runs inside Ray
Train workers and, for tests, in plain gloo processes; it only talks to a ``Session``, through
the resumable loop of distrec/runtime/epochs.py (checkpoints: ``progress.json``, and while a
model trains its weights ``model.safetensors`` and optimizer state ``optim.pt``).
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from distrec.compress.codes import CODES, DECODER, ENCODER, SCHEMA_VERSION, codes_part, compress, weights_bytes
from distrec.compress.config import CompressConfig
from distrec.compress.data import feature_stats, holdout_mask, read_slice, vector_batches
from distrec.config import to_dict
from distrec.console import progress_bar
from distrec.data.partition import agreed_steps
from distrec.device import resolve_device
from distrec.models.compressor import Compressor, code_size
from distrec.resources import Stopwatch
from distrec.runtime.checkpoint import read_progress, read_tensors, require_files, save_files
from distrec.runtime.epochs import Resumable, open_tracker
from distrec.runtime.session import Session
from distrec.storage import DirectoryWriter, join, write_text
from distrec.storage.commit import write_shard
from distrec.storage.embeddings import EMBEDDINGS, ROW_GROUP_ROWS
from distrec.tracking import Tracker

__all__ = ["compress_worker", "table_uri", "compressed_uri", "model_key"]

MODEL, OPTIM = "model.safetensors", "optim.pt"


def table_uri(cfg: CompressConfig, table: str) -> str:
    return join(cfg.source.run, EMBEDDINGS, table)


def compressed_uri(cfg: CompressConfig, table: str, ratio: int) -> str:
    return join(cfg.output_dir, "compressed", model_key(table, ratio))


def model_key(table: str, ratio: int) -> str:
    return f"{table}-{ratio}x"


def compress_worker(cfg: CompressConfig, session: Session) -> dict[str, Any]:
    """One worker's whole run; returns its state (identical on every worker): the training
    history (each epoch with the number of workers that ran it), ``resumes``, ``resizes`` and
    ``world`` (the workers of the attempt that finished). Rank 0
    logs the config and each model's per-epoch metrics (``<table>-<ratio>x/loss``, step = its
    epoch) to the tracking backends the config asks for."""
    with open_tracker(cfg) as tracker:
        return _compress(cfg, session, tracker)


def _compress(cfg: CompressConfig, session: Session, tracker: Tracker) -> dict[str, Any]:
    rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.model.device, allow_gpu=cfg.ray.use_gpu)
    training: dict[str, Any] = {}  # the compressor being trained and its optimizer, for the checkpoints
    resumed: dict[str, Any] = {}  # the weights and optimizer state of a model a checkpoint caught mid-training

    def load(directory: str) -> dict[str, Any]:
        state, weights = _load_checkpoint(directory)
        resumed.update(weights or {})
        return state

    def where(state: dict[str, Any]) -> str:
        return f"epoch {state['epoch']} of {state['current']}" if state["current"] else f"model {state['finished'][-1]}"

    run = Resumable(
        session,
        save=lambda directory, state: _save_checkpoint(directory, state, **training),
        load=load,
        describe=where,
        resized="each table's rows shared out anew",
    )
    state = run.resume(lambda: {"finished": [], "current": None, "epoch": 0, "epochs_total": 0, "history": {}, "resumes": 0})

    def checkpoint(metrics: dict[str, Any]) -> None:
        # "epoch" numbers checkpoints in order across models (LocalSession names folders by it)
        run.checkpoint({**metrics, "epoch": state["epochs_total"]})

    for table in cfg.source.tables:
        rows = read_slice(table_uri(cfg, table), rank=rank, world=world)
        train = rows.vector[~holdout_mask(rows.index, cfg.holdout, table)]
        mean, scale = feature_stats(train)
        for ratio in cfg.ratios:
            key = model_key(table, ratio)
            if key in state["finished"]:
                continue
            torch.manual_seed(cfg.fit.seed)  # the same initial weights on every worker
            model = Compressor(
                cfg.model, dim=rows.vector.shape[1], code_size=code_size(rows.vector.shape[1], ratio, cfg.model.code_dtype)
            )
            model.set_standardisation(mean, scale)
            model.to(device)  # initialised on the CPU from the seed: the same weights on any device
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.fit.lr, weight_decay=cfg.fit.weight_decay)
            training.update(model=model, opt=opt)
            start = 0
            if resumed and state["current"] == key:
                model.load_state_dict(resumed["model"])
                opt.load_state_dict(resumed["optim"])
                start = state["epoch"]
            ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            history = state["history"].setdefault(key, [])
            with progress_bar(total=cfg.fit.epochs - start, desc=key, unit="epochs", enabled=rank == 0) as bar:
                for epoch in range(start, cfg.fit.epochs):
                    metrics = {"model": key, "model_epoch": epoch + 1, **_train_epoch(ddp, model, opt, train, cfg, key, epoch)}
                    metrics["world"] = world  # an elastic run's size, epoch by epoch
                    history.append(metrics)
                    tracker.log_metrics({f"{key}/{k}": v for k, v in metrics.items() if k != "model_epoch"}, step=epoch + 1)
                    state.update(current=key, epoch=epoch + 1, epochs_total=state["epochs_total"] + 1)
                    if (epoch + 1) % cfg.fit.checkpoint_every == 0:
                        checkpoint(metrics)
                    if rank == 0 and ((epoch + 1) % cfg.fit.checkpoint_every == 0 or epoch + 1 == cfg.fit.epochs):
                        print(f"{key} epoch {epoch + 1}/{cfg.fit.epochs} loss={metrics['loss']:.4f}", flush=True)
                    bar.update(1)
            _sync_buffers(model)
            _write_compressed(cfg, table, ratio, model, rows, train_rows=len(train))
            state["finished"].append(key)
            state.update(current=None, epoch=0)
            checkpoint({"model": key, "finished": True})
    if rank == 0:
        write_text(join(cfg.output_dir, "history.json"), json.dumps(state["history"], indent=1))
    return state


def _train_epoch(ddp, model: Compressor, opt, train: np.ndarray, cfg: CompressConfig, key: str, epoch: int) -> dict[str, float]:
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp.train()
    lr = cfg.fit.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.fit.epochs))  # cosine decay, stateless on resume
    for group in opt.param_groups:
        group["lr"] = lr
    # data order and gate noise depend only on (seed, model, epoch, worker): a resumed run repeats them
    salt = zlib.crc32(key.encode())
    rng = np.random.default_rng([cfg.fit.seed, salt, epoch, rank])
    torch.manual_seed(zlib.crc32(f"{cfg.fit.seed}/{key}/{epoch}/{rank}".encode()))
    var_mean = float(model.scale.square().mean())
    groups = model.gate.score.out_features
    device = model.mean.device
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, rows: read once, after the epoch
    clock = Stopwatch()
    batches = vector_batches(
        train, batch_size=cfg.fit.batch_size, steps=agreed_steps(len(train), cfg.fit.batch_size), rng=rng, device=device
    )
    for x, weight in batches:
        rows = weight.sum().reshape(1)
        dist.all_reduce(rows)  # real rows in the global batch
        x_hat, l0 = ddp(x)
        row_loss = (x_hat - x).square().mean(1) / var_mean + cfg.model.l0_weight * l0 / groups  # [B]
        loss = world * (weight * row_loss).sum() / rows.clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += torch.stack([(weight * row_loss).detach().sum(), weight.sum()]).double()
    dist.all_reduce(total)
    return {"loss": float(total[0] / total[1].clamp_min(1.0)), "lr": lr, "epoch_s": clock.seconds()}


def _sync_buffers(model: Compressor) -> None:
    """Rank 0's batch-norm statistics everywhere: each worker's last forward updated its own, and
    every worker must encode with the encoder rank 0 saves."""
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


def _write_compressed(cfg: CompressConfig, table: str, ratio: int, model: Compressor, rows, *, train_rows: int) -> None:
    """Every worker writes the codes of its own rows as one shard; rank 0 adds the weights and
    commits the manifest last."""
    rank, world = dist.get_rank(), dist.get_world_size()
    uri = compressed_uri(cfg, table, ratio)
    writer = DirectoryWriter(uri, kind=CODES, schema_version=SCHEMA_VERSION) if rank == 0 else None
    try:
        if writer:
            writer.begin()
        files_uri = [writer.files_uri if writer else None]
        dist.broadcast_object_list(files_uri, src=0)  # the new commit's folder, once rank 0 holds the lock
        entry = None
        if len(rows.index):
            part = codes_part(rows.index, compress(rows.vector, model), raw=rows.raw, **rows.columns)
            entry = write_shard(files_uri[0], f"part-{rank:05d}.parquet", part, row_group_size=ROW_GROUP_ROWS)
        entries: list[Any] = [None] * world
        dist.all_gather_object(entries, (entry, (len(rows.index), train_rows)))
        if writer:
            writer.adopt(e for e, _ in entries if e is not None)
            writer.write_bytes(ENCODER, weights_bytes(model, model.encoder_keys()), rows=0)
            writer.write_bytes(DECODER, weights_bytes(model, model.decoder_keys()), rows=0)
            writer.commit(
                {
                    "table": table,
                    "ratio": ratio,
                    "dim": model.dim,
                    "code_size": model.code_size,
                    "code_dtype": cfg.model.code_dtype,
                    "compressor": to_dict(cfg.model),
                    "source": table_uri(cfg, table),
                    "source_meta": rows.meta,
                    "rows": sum(c[0] for _, c in entries),
                    "train_rows": sum(c[1] for _, c in entries),
                    "rows_per_worker": [c[0] for _, c in entries],
                    "holdout": to_dict(cfg.holdout) if cfg.holdout.table == table else None,
                    "row_group_rows": ROW_GROUP_ROWS,
                }
            )
    except BaseException:
        if writer:
            writer.abort()
        raise
    dist.barrier()


def _save_checkpoint(directory: str, state: dict[str, Any], *, model: Compressor, opt: torch.optim.Optimizer) -> None:
    """Rank 0 saves the model being trained (if any) and its optimizer, then the state."""
    files = {MODEL: model.state_dict(), OPTIM: opt.state_dict()} if state["current"] is not None else {}
    save_files(directory, files, progress=state)


def _load_checkpoint(directory: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The saved state and, if a model was mid-training, its weights and optimizer state
    (read without unpickling: safetensors, and ``torch.load(weights_only=True)``); a DataError
    naming the file if either is not what this job writes."""
    state = read_progress(directory)
    if state["current"] is None:
        return state, None
    require_files(directory, (MODEL, OPTIM))
    return state, {"model": read_tensors(directory, MODEL), "optim": read_tensors(directory, OPTIM)}
