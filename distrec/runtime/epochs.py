"""The resumable loop every Ray job runs, and its per-epoch reporting.

    run = Resumable(session, save=save, load=load)
    state = run.resume(fresh)            # the latest checkpoint's state (``load`` restored the job's
                                         # objects in place), "resumes" counted; else ``fresh()``
    for epoch in run.epochs(total):      # from the saved position (0-based)
        ...one epoch or step...
        run.end_epoch(metrics)           # state[position] and history advance, then checkpoint
        # or run.checkpoint(metrics)     # save(tmp, state) into a temporary folder, session.report

The job owns what is in ``state`` (it is saved as ``progress.json``, so plain JSON) and the files
of its checkpoint (``save``/``load``, through runtime/checkpoint.py); the helper owns the order
of things: resume before the first epoch, checkpoint into a fresh temporary folder every worker
writes, report with it, and where a resumed run starts. The training loops (tables, dense) use
all of it; the compressor (tables × ratios × epochs) and Distill-CF (steps) resume and
checkpoint through it on their own schedule. Elastic training (a run resumed on another number
of workers) is decided here, at the epoch boundary: ``resume`` is where a checkpoint written by
one world size meets the next.

Tracking: ``open_tracker`` (rank 0 logs to the configured backends), ``log_epoch`` (an epoch's
metrics to the tracker and rank 0's console) and ``finish_run`` (the final metrics with the
run's resources and nodes, metrics.json and history.json).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from distrec.resources import Stopwatch, peak_rss_mb
from distrec.runtime.cluster import worker_nodes
from distrec.runtime.config import run_name
from distrec.runtime.reshard import resume_message
from distrec.runtime.session import Session
from distrec.storage import join, write_text
from distrec.tracking import Tracker

__all__ = ["Resumable", "early_stop", "open_tracker", "log_epoch", "finish_run"]


class Resumable:
    """One worker's run that a checkpoint can resume (see the module docstring).

    ``save(directory, state)`` writes the job's checkpoint files and ``progress.json`` (every
    worker calls it, with its own directory); ``load(directory)`` restores the job's objects in
    place and returns the saved state. ``position`` names the state's counter of finished epochs
    (or steps); ``describe(state)`` says where a resumed run picks up, after "resumed from <ckpt>
    after ..."."""

    def __init__(
        self,
        session: Session,
        *,
        save: Callable[[str, dict[str, Any]], None],
        load: Callable[[str], dict[str, Any]],
        position: str = "epoch",
        describe: Callable[[dict[str, Any]], str] | None = None,
        resized: str = "tables resharded",
    ) -> None:
        self.session, self.save, self.load, self.position, self.resized = session, save, load, position, resized
        self.describe = describe or (lambda state: f"{position} {state[position]}")
        self.state: dict[str, Any] = {}

    def resume(self, fresh: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The state of the session's latest checkpoint, its ``resumes`` counted, and ``resizes``
        when it was saved by another number of workers (``state["world"]``; rank 0 says both), or
        ``fresh()`` when there is none."""
        with self.session.latest_checkpoint() as ckpt:
            if ckpt:
                state = self.load(ckpt)
                state["resumes"] = state.get("resumes", 0) + 1
                state["resizes"] = state.get("resizes", 0) + (state.get("world", _world()) != _world())
                if _rank() == 0:
                    print(resume_message(ckpt, state, _world(), self.describe(state), self.resized), flush=True)
        self.state = state if ckpt else fresh()
        return self.state

    def epochs(self, total: int) -> range:
        """The epochs (or steps) still to run, 0-based: none once the run stopped early."""
        return range(0) if self.state.get("stopped") else range(self.state[self.position], total)

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        """Epoch ``metrics[position]`` is done: it joins the history (with the world size that ran
        it), then the checkpoint."""
        self.state[self.position] = metrics[self.position]
        self.state["history"].append({**metrics, "world": _world()})  # an elastic run's size, epoch by epoch
        self.checkpoint(metrics)

    def checkpoint(self, metrics: dict[str, Any]) -> None:
        """Save the state into a fresh temporary folder and report ``metrics`` with it (Ray Train
        gathers every worker's folder into one checkpoint; ``metrics["epoch"]`` numbers it)."""
        self.state["world"] = _world()  # who saved it: a resume on another number of workers counts a resize
        with tempfile.TemporaryDirectory(prefix="distrec-ckpt-") as tmp:
            self.save(tmp, self.state)
            self.session.report(metrics, tmp)


def early_stop(train: Any, metrics: dict[str, Any], state: dict[str, Any], epoch: int) -> tuple[bool, bool]:
    """Early stopping on ``train.early_stopping_metric``: records this epoch in ``state`` (``best``,
    ``best_epoch``, ``bad_epochs``, kept in the checkpoint) and says (improved, stop)."""
    watch = train.early_stopping_metric
    if not watch:
        return False, False
    if watch not in metrics:
        raise ValueError(f"train.early_stopping_metric={watch!r} is not among the metrics {sorted(metrics)}")
    value, best = metrics[watch], state["best"]
    if best is None or (value < best if train.early_stopping_mode == "min" else value > best):
        state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
        return True, False
    state["bad_epochs"] += 1
    return False, state["bad_epochs"] >= train.patience


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def open_tracker(cfg: Any) -> Tracker:
    """The run's tracker (any job config with ``tracking``, ``output_dir`` and ``ray``): rank 0
    writes to the configured backends, other ranks' do nothing."""
    return Tracker(cfg.tracking, output_dir=cfg.output_dir, run=run_name(cfg), config=cfg, enabled=_rank() == 0)


def log_epoch(metrics: dict[str, Any], epochs: int, tracker: Tracker) -> None:
    """An epoch's metrics to the tracking backends (rank 0's tracker) and rank 0's console."""
    tracker.log_metrics(metrics, step=metrics["epoch"])
    if _rank() != 0:
        return
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"epoch {metrics['epoch']}/{epochs} {shown}", flush=True)


def finish_run(
    final: dict[str, Any], history: list[dict], *, output_dir: str, clock: Stopwatch, tracker: Tracker, **extra: Any
) -> dict[str, Any]:
    """Add the run's resources and nodes (and ``extra``) to the final metrics; rank 0 tracks them
    and writes ``metrics.json`` and ``history.json`` into ``output_dir``. Collective.
    ``worker_nodes``: each rank's Ray node id, where the run's last attempt actually ran."""
    rss = torch.tensor([peak_rss_mb()], dtype=torch.float64)
    dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    final.update(
        num_workers=dist.get_world_size(),
        worker_nodes=worker_nodes(),
        peak_rss_mb_per_worker=float(rss),
        wall_s=clock.seconds(),
        **extra,
    )
    last = history[-1] if history else {}
    tracker.log_metrics({k: v for k, v in final.items() if k not in last}, step=len(history))  # test metrics, wall time
    if _rank() == 0:
        write_text(join(output_dir, "metrics.json"), json.dumps(_finite(final), indent=1))
        write_text(join(output_dir, "history.json"), json.dumps(history, indent=1))
    return final


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
