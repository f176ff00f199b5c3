"""The per-worker training loop, top to bottom:

    task (data slices) → unsharded model on meta → fused optimizer → plan → DMP → resume?
    → epochs (train, validate, checkpoint + report, early stop) → best weights → test
    → export embeddings → metrics.json

It runs inside Ray Train workers and, for tests, in plain gloo processes; the loop only talks
to a ``Session`` (see session.py).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from typing import Any

import torch
import torch.distributed as dist
from torchrec.optim.optimizers import in_backward_optimizer_filter

from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.models.registry import build_model
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.storage import join, write_text
from distrec.tracking import Tracker
from distrec.train.checkpoint import load_checkpoint, save_checkpoint
from distrec.train.config import OptimConfig, TrainConfig
from distrec.train.export import export_tables
from distrec.train.launch import run_name
from distrec.train.reshard import resume_message
from distrec.train.session import Session
from distrec.train.sharding import local_table_pieces, plan_text, shard_model
from distrec.train.tasks import make_task

__all__ = ["train_worker", "open_tracker", "log_epoch", "finish_run"]

log = logging.getLogger(__name__)


def _dense_optimizer(dmp: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Everything the fused embedding optimizer does not own (dense layers, data-parallel tables);
    a model of tables only (MF-BPR) gets an optimizer over one empty group, a no-op."""
    params = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    kinds = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}
    return kinds[cfg.dense]([{"params": params}], lr=cfg.dense_lr)


def _snapshot(dmp, model) -> dict[str, torch.Tensor]:
    """A copy of this worker's parameters (its table shards and the dense part)."""
    out = {f"table/{t.name}/{r}/{c}": v.detach().clone() for t in model.tables for r, c, v in local_table_pieces(dmp, t.name, every_replica=True)}
    out.update({f"dense/{n}": p.detach().clone() for n, p in in_backward_optimizer_filter(dmp.named_parameters())})
    return out


def _restore(dmp, model, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for t in model.tables:
            for r, c, v in local_table_pieces(dmp, t.name, every_replica=True):
                v.copy_(snapshot[f"table/{t.name}/{r}/{c}"])
        for n, p in in_backward_optimizer_filter(dmp.named_parameters()):
            p.copy_(snapshot[f"dense/{n}"])


def _improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


def train_worker(cfg: TrainConfig, session: Session) -> dict[str, Any]:
    """One worker's whole run; returns the final metrics (identical on every worker). Rank 0
    logs the config and every epoch's metrics to the tracking backends the config asks for."""
    with open_tracker(cfg) as tracker:
        return _train(cfg, session, tracker)


def open_tracker(cfg: TrainConfig) -> Tracker:
    """The run's tracker: rank 0 writes to the configured backends, other ranks' do nothing."""
    return Tracker(cfg.tracking, output_dir=cfg.output_dir, run=run_name(cfg), config=cfg, enabled=dist.get_rank() == 0)


def _train(cfg: TrainConfig, session: Session, tracker: Tracker) -> dict[str, Any]:
    clock = Stopwatch()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.ray.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.train.seed)

    # -- data: the task reads this worker's slice of each split part ---------------------
    dataset = InteractionDataset(cfg.data.path, verify=cfg.data.verify)
    split = dataset.resolve_split(cfg.data.split)
    task = make_task(cfg, dataset, split)

    # -- model: unsharded on meta, then sharded by the planner's plan --------------------
    model = build_model(cfg.model, task.context(), torch.device("meta"))
    dmp, plan = shard_model(model, optim=cfg.optim, sharding=cfg.sharding, device=device, seed=cfg.train.seed)
    model = dmp.module  # the unwrapped model: its loss/export helpers and dense parameters
    opt = _dense_optimizer(dmp, cfg.optim)
    if rank == 0:
        print(f"sharding plan ({world} worker(s)):\n{plan_text(plan)}", flush=True)
        write_text(join(cfg.output_dir, "plan.txt"), plan_text(plan))
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))

    # -- resume ---------------------------------------------------------------------------
    progress: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None, "bad_epochs": 0, "resumes": 0}
    with session.latest_checkpoint() as ckpt:
        if ckpt:
            progress = load_checkpoint(ckpt, dmp=dmp, dense_opt=opt)
            progress["resumes"] = progress.get("resumes", 0) + 1
            if rank == 0:
                print(resume_message(ckpt, progress, world), flush=True)
    best_weights = None
    watch = cfg.train.early_stopping_metric

    # -- epochs ---------------------------------------------------------------------------
    for epoch in range(progress["epoch"], cfg.train.epochs):
        metrics: dict[str, Any] = {"epoch": epoch + 1}
        metrics.update(task.train_epoch(dmp, model, opt, epoch))
        metrics.update(task.evaluate(dmp, model, "val"))
        stop = False
        if watch:
            if watch not in metrics:
                raise ValueError(f"train.early_stopping_metric={watch!r} is not among the metrics {sorted(metrics)}")
            if _improved(metrics[watch], progress["best"], cfg.train.early_stopping_mode):
                progress.update(best=metrics[watch], best_epoch=epoch + 1, bad_epochs=0)
                best_weights = _snapshot(dmp, model) if cfg.train.restore_best else None
            else:
                progress["bad_epochs"] += 1
                stop = progress["bad_epochs"] >= cfg.train.patience
        progress["epoch"] = epoch + 1
        progress["history"].append(metrics)
        with tempfile.TemporaryDirectory(prefix="distrec-ckpt-") as tmp:
            save_checkpoint(tmp, dmp=dmp, dense_opt=opt, progress=progress)
            session.report(metrics, tmp)
        log_epoch(metrics, cfg.train.epochs, tracker)
        if stop:
            if rank == 0:
                print(f"early stopping: {watch} has not improved for {cfg.train.patience} epoch(s)", flush=True)
            break

    # -- best weights, test, export -------------------------------------------------------
    restored = False
    if watch and cfg.train.restore_best and progress["best_epoch"] not in (None, progress["epoch"]):
        if best_weights is not None:
            _restore(dmp, model, best_weights)
            restored = True
        elif rank == 0:
            log.warning("the best epoch came before this run resumed; testing the last epoch's weights")
    final: dict[str, Any] = {
        "epochs": progress["epoch"],
        "best_epoch": progress["best_epoch"],
        "restored_best": restored,
        "resumes": progress["resumes"],
        **(progress["history"][-1] if progress["history"] else {}),
    }
    final.pop("epoch", None)
    final.update(task.evaluate(dmp, model, "test"))
    if hasattr(task, "explain"):
        task.explain(dmp, model, cfg.output_dir)  # e.g. attention weights of one user, for the report
    if cfg.train.export_embeddings:
        meta = {"model": cfg.model.name, "dataset": cfg.data.path, "split": split, **model.export_meta()}
        if hasattr(task, "export"):  # the task's vectors (e.g. two towers' outputs), not table rows
            final["embeddings"] = task.export(dmp, model, output_dir=cfg.output_dir, meta=meta)
        else:
            final["embeddings"] = export_tables(dmp, model, output_dir=cfg.output_dir, dataset=dataset, meta=meta)
    return finish_run(cfg, final, progress["history"], clock=clock, dataset=dataset, tracker=tracker)


def log_epoch(metrics: dict[str, Any], epochs: int, tracker: Tracker) -> None:
    """An epoch's metrics to the tracking backends (rank 0's tracker) and rank 0's console."""
    tracker.log_metrics(metrics, step=metrics["epoch"])
    if dist.get_rank() != 0:
        return
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"epoch {metrics['epoch']}/{epochs} {shown}", flush=True)


def finish_run(
    cfg: TrainConfig, final: dict[str, Any], history: list[dict], *, clock: Stopwatch, dataset: InteractionDataset, tracker: Tracker
) -> dict[str, Any]:
    """Add the run's resources to the final metrics; rank 0 tracks them and writes metrics.json
    and history.json."""
    rss = torch.tensor([peak_rss_mb()], dtype=torch.float64)
    dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    final.update(
        num_workers=dist.get_world_size(),
        peak_rss_mb_per_worker=float(rss),
        wall_s=clock.seconds(),
        noise_floor_rmse=dataset.meta.get("noise_floor_rmse"),
    )
    last = history[-1] if history else {}
    tracker.log_metrics({k: v for k, v in final.items() if k not in last}, step=len(history))  # test metrics, wall time
    if dist.get_rank() == 0:
        write_text(join(cfg.output_dir, "metrics.json"), json.dumps(_finite(final), indent=1))
        write_text(join(cfg.output_dir, "history.json"), json.dumps(history, indent=1))
    return final


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
