"""The per-worker training loop, top to bottom:

    task (data slices) → unsharded model on meta → fused optimizer → plan → DMP → resume?
    → epochs (train, validate, checkpoint + report, early stop) → best weights → test
    → export embeddings → metrics.json

It runs inside Ray Train workers and, for tests, in plain gloo processes; the loop only talks
to a ``Session`` (distrec/runtime/session.py), through the resumable epoch loop of
distrec/runtime/epochs.py. ``worker`` is the training job's per-worker function: it runs the
loop the model's kind asks for (this one, the dense loop, or ALS's sweeps).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torchrec.optim.optimizers import in_backward_optimizer_filter

from distrec.config import to_yaml
from distrec.models.registry import model_spec
from distrec.resources import Stopwatch, timed
from distrec.runtime.checkpoint import load_checkpoint, save_checkpoint
from distrec.runtime.epochs import Resumable, early_stop, finish_run, log_epoch, open_tracker
from distrec.runtime.session import Session
from distrec.storage import join, write_text
from distrec.tracking import Tracker
from distrec.train.als_worker import train_als_worker
from distrec.train.config import OptimConfig, TrainConfig
from distrec.train.dense_worker import train_dense_worker
from distrec.train.export import export_tables
from distrec.train.sharding import local_table_pieces, plan_text, shard_model
from distrec.train.tasks import make_task

__all__ = ["worker", "train_worker"]

log = logging.getLogger(__name__)


def _dense_optimizer(dmp: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Everything the fused embedding optimizer does not own (dense layers, data-parallel tables);
    a model of tables only (MF-BPR) gets an optimizer over one empty group, a no-op."""
    params = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    kinds = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}
    return kinds[cfg.dense]([{"params": params}], lr=cfg.dense_lr)


def _snapshot(dmp, model) -> dict[str, torch.Tensor]:
    """A copy of this worker's parameters (its table shards and the dense part)."""
    out = {
        f"table/{t.name}/{r}/{c}": v.detach().clone()
        for t in model.tables
        for r, c, v in local_table_pieces(dmp, t.name, every_replica=True)
    }
    out.update({f"dense/{n}": p.detach().clone() for n, p in in_backward_optimizer_filter(dmp.named_parameters())})
    return out


def _restore(dmp, model, snapshot: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for t in model.tables:
            for r, c, v in local_table_pieces(dmp, t.name, every_replica=True):
                v.copy_(snapshot[f"table/{t.name}/{r}/{c}"])
        for n, p in in_backward_optimizer_filter(dmp.named_parameters()):
            p.copy_(snapshot[f"dense/{n}"])


def train_worker(cfg: TrainConfig, session: Session) -> dict[str, Any]:
    """One worker's whole run; returns the final metrics (identical on every worker). Rank 0
    logs the config and every epoch's metrics to the tracking backends the config asks for."""
    with open_tracker(cfg) as tracker:
        return _train(cfg, session, tracker)


def _train(cfg: TrainConfig, session: Session, tracker: Tracker) -> dict[str, Any]:
    clock = Stopwatch()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.ray.use_gpu else torch.device("cpu")
    torch.manual_seed(cfg.train.seed)

    # -- data: the task reads this worker's slice of each split part ---------------------
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    spec = model_spec(cfg.model)
    task = make_task(cfg, spec, dataset, split)

    # -- model: unsharded on meta, then sharded by the planner's plan --------------------
    model = spec.build(cfg.model, task.context(), torch.device("meta"))
    dmp, plan = shard_model(model, optim=cfg.optim, sharding=cfg.sharding, device=device, seed=cfg.train.seed)
    model = dmp.module  # the unwrapped model: its loss/export helpers and dense parameters
    opt = _dense_optimizer(dmp, cfg.optim)
    if rank == 0:
        print(f"sharding plan ({world} worker(s)):\n{plan_text(plan)}", flush=True)
        write_text(join(cfg.output_dir, "plan.txt"), plan_text(plan))
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))

    # -- resume ---------------------------------------------------------------------------
    run = Resumable(
        session,
        save=lambda directory, state: save_checkpoint(directory, dmp=dmp, dense_opt=opt, progress=state),
        load=lambda directory: load_checkpoint(directory, dmp=dmp, dense_opt=opt),
    )
    state = run.resume(lambda: {"epoch": 0, "history": [], "best": None, "best_epoch": None, "bad_epochs": 0, "resumes": 0})
    best_weights = None
    watch = cfg.train.early_stopping_metric
    # where this attempt's time outside the epochs' training steps goes (the fixed costs)
    phases = {"setup_s": clock.seconds(), "eval_s": 0.0, "checkpoint_s": 0.0}

    # -- epochs ---------------------------------------------------------------------------
    for epoch in run.epochs(cfg.train.epochs):
        metrics: dict[str, Any] = {"epoch": epoch + 1}
        metrics.update(task.train_epoch(dmp, model, opt, epoch))
        with timed(phases, "eval_s"):
            metrics.update(task.evaluate(dmp, model, "val"))
        improved, stop = early_stop(cfg.train, metrics, state, epoch)
        if improved:
            best_weights = _snapshot(dmp, model) if cfg.train.restore_best else None
        with timed(phases, "checkpoint_s"):
            run.end_epoch(metrics)
        log_epoch(metrics, cfg.train.epochs, tracker)
        if stop:
            if rank == 0:
                print(f"early stopping: {watch} has not improved for {cfg.train.patience} epoch(s)", flush=True)
            break

    # -- best weights, test, export -------------------------------------------------------
    restored = False
    if watch and cfg.train.restore_best and state["best_epoch"] not in (None, state["epoch"]):
        if best_weights is not None:
            _restore(dmp, model, best_weights)
            restored = True
        elif rank == 0:
            log.warning("the best epoch came before this run resumed; testing the last epoch's weights")
    final: dict[str, Any] = {
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "restored_best": restored,
        "resumes": state["resumes"],
        "resizes": state.get("resizes", 0),
        **(state["history"][-1] if state["history"] else {}),
    }
    final.pop("epoch", None)
    with timed(phases, "finish_s"):
        final.update(task.evaluate(dmp, model, "test"))
        if hasattr(task, "explain"):
            task.explain(dmp, model, cfg.output_dir)  # e.g. attention weights of one user, for the report
        if cfg.train.export_embeddings:
            meta = {"model": cfg.model.name, "dataset": cfg.data.path, "split": split, **model.export_meta()}
            if hasattr(task, "export"):  # the task's vectors (e.g. two towers' outputs), not table rows
                final["embeddings"] = task.export(dmp, model, output_dir=cfg.output_dir, meta=meta)
            else:
                final["embeddings"] = export_tables(dmp, model, output_dir=cfg.output_dir, dataset=dataset, meta=meta)
    noise_floor = dataset.meta.get("noise_floor_rmse")
    return finish_run(
        final, state["history"], output_dir=cfg.output_dir, clock=clock, tracker=tracker, noise_floor_rmse=noise_floor, **phases
    )


# The per-worker loop of each kind of trained model (its spec's ``loop``): this module's TorchRec
# loop, the dense loop, or ALS's sweeps. A model with a loop of its own adds it here.
LOOPS = {"tables": train_worker, "dense": train_dense_worker, "als": train_als_worker}


def worker(cfg: TrainConfig, session: Session) -> dict[str, Any]:
    """The training job's per-worker function (distrec/jobs.py): the loop its model's spec names."""
    return LOOPS[model_spec(cfg.model).loop](cfg, session)
