"""Distill-CF's loop (Sachdeva et al., "Infinite Recommendation Networks: A Data-Centric
Approach", NeurIPS 2022), in torch; the paper's code (JAX) is ``distill.py`` of noveens/distill_cf.

    setup     read the split's train/val/test as sparse rows; logits ← rows of `budget` random
              real users (0/1); validate them as they are (step 0: the baseline to beat)
    step      X̃ = multi-Gumbel(logits) → ∞-AE regression from X̃ onto a batch of real users →
              softmax CE + cardinality → Adam on the logits (gradients averaged over workers)
    validate  every `validate_every` steps: a fresh X̃, λ searched on validation (``val_users``,
              ``test_users``: seeded samples of the evaluated users, for a large dataset; the best λ is
              also the one later steps regress with); keep the best X̃; stop after `patience`
              steps without improvement
    checkpoint every `checkpoint_every` steps (``save_distill_state``): on Ray through
              Ray Train's checkpoints, otherwise in <output_dir>/checkpoints/ (the newest two
              kept); a restarted run resumes after the last checkpointed step and, as every
              step's randomness is seeded by its number, ends as the uninterrupted run would
    finish    ∞-AE on the best X̃: λ on validation, then test; rank 0 writes the synthetic users
              (<output_dir>/users/), metrics.json, curve.json, config.yaml and the run report
              (report.md, report.html, validation.png; its URI is ``report`` in the metrics)

Every worker holds the same logits (same initial users, the same Gumbel seed per step, averaged
gradients), so only the target batches differ between workers; the ranking evaluation splits
its users between them (``evaluate_ranking`` is collective).

Device: ``model.device`` (auto: the GPU where torch sees one), resolved once; the logits, the
Gumbel noise, the target batches and the kernel solve are all on it, and a
step's loss stays there until the next validation or checkpoint reads every pending step's
losses in one copy (no per-step sync).

The checkpoint (through distrec/runtime/epochs.py and checkpoint.py) holds ``state.pt`` — the
logits [n, I], the best synthetic set so far [n, I] and Adam's state, read back with
``torch.load(weights_only=True)`` — and ``progress.json``: the last finished step, the best step
and its validation metrics, the λ later steps regress with, the learning curve so far, whether
patience ran out. No RNG state is saved because none is carried between steps: step t's Gumbel
noise is seeded by (seed, t) and its real-user batch by (seed, t, rank), so the steps after a
resume draw exactly what they would have drawn without the interruption. Rank 0 writes the files
(every worker holds the same logits); every worker reports, as Ray Train gathers a checkpoint
from all of them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distrec.config import to_yaml
from distrec.console import progress_bar
from distrec.device import resolve_device
from distrec.distill.config import DistillConfig
from distrec.distill.gumbel import multi_gumbel
from distrec.distill.objective import distill_loss
from distrec.distill.output import write_synthetic
from distrec.distill.report import write_distill_report
from distrec.distill.targets import TargetBatches
from distrec.errors import DataError, UserError
from distrec.eval.holdout import Holdout
from distrec.fit.search import search_and_test, search_lambda
from distrec.models.closed_form import InfiniteAE
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.runtime.checkpoint import PROGRESS, read_progress, read_tensors, require_files, save_files
from distrec.runtime.epochs import Resumable
from distrec.runtime.session import LocalSession, Session
from distrec.storage import join, write_text

__all__ = [
    "distill",
    "worker",
    "sampled_holdout",
    "initial_logits",
    "sample",
    "save_distill_state",
    "load_distill_state",
    "SYNTHETIC_DIR",
    "CHECKPOINT_DIR",
    "STATE",
]

log = logging.getLogger(__name__)

SYNTHETIC_DIR = "users"  # under output_dir: the synthetic users' Parquet + manifest
CHECKPOINT_DIR = "checkpoints"  # under output_dir, when not on Ray: the latest checkpoints (resumed from)
VALIDATION_SEED = 7_919  # offsets the Gumbel seed of validation draws from the training steps'
STATE = "state.pt"  # in a checkpoint: logits, best synthetic set, Adam's state


def _validate(cfg: DistillConfig, x: torch.Tensor, holdout: Holdout) -> dict[str, Any]:
    best, _, _ = search_lambda(InfiniteAE.on_support(cfg.model, x), holdout, eval_cfg=cfg.eval, select=cfg.select)
    return best


def sample(cfg: DistillConfig, logits: torch.Tensor, step: int, *, validation: bool = False) -> torch.Tensor:
    """Step ``step``'s multi-Gumbel sample X̃ [n, I] of ``logits``: seeded by (seed, step), the
    validation draws' seeds offset from the training steps'."""
    seed = cfg.seed * 1_000_003 + step + (VALIDATION_SEED if validation else 0)
    return multi_gumbel(logits, seed=seed, draws=cfg.samples_per_user, tau=cfg.tau)


def initial_logits(
    cfg: DistillConfig, holdout: Holdout, targets: TargetBatches, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The logits [budget, I] the run starts from, a leaf to optimise: ``budget`` seeded real users
    with a training item, as their 0/1 rows (the paper starts from real users)."""
    initial = np.sort(np.random.default_rng(cfg.seed).choice(targets.active, size=cfg.budget, replace=False))
    return holdout.train.dense(initial, device=device).requires_grad_()


def _settle(pending: list[tuple[dict[str, Any], torch.Tensor]]) -> None:
    """Fill in the losses of the steps whose records still wait for them: one device → host copy."""
    if pending:
        values = torch.stack([v for _, v in pending]).tolist()
        for (record, _), (loss, ce, cardinality) in zip(pending, values):
            record.update(loss=loss, ce=ce, cardinality=cardinality)
        pending.clear()


def sampled_holdout(cfg: DistillConfig, holdout: Holdout) -> Holdout:
    """``holdout`` with its validation part cut to a seeded sample of ``val_users`` users and its
    test part to ``test_users`` (None: whole): the evaluations then score only them, bounded on
    Netflix's 480k users. Training rows (targets, contexts, masks) are left whole."""
    parts = {}
    for part, size, salt in (("val", cfg.val_users, 1), ("test", cfg.test_users, 2)):
        held = getattr(holdout, part)
        users = np.flatnonzero(held.counts() > 0)
        if size is not None and size < len(users):
            chosen = np.random.default_rng([cfg.seed, VALIDATION_SEED, salt]).choice(users, size=size, replace=False)
            parts[part] = held.only(np.sort(chosen))
    return replace(holdout, **parts)


def distill(cfg: DistillConfig, *, rank: int = 0, world: int = 1, session: Session | None = None) -> dict[str, Any]:
    """The whole run on this worker; returns the metrics (rank 0 also writes them). ``session``:
    where checkpoints go and the one to resume from is found (None: ``<output_dir>/checkpoints``)."""
    wall = clock = Stopwatch()  # clock: distillation time since the last checkpoint
    device = resolve_device(cfg.model.device, allow_gpu=cfg.ray is None or cfg.ray.use_gpu)
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    holdout = Holdout.read(dataset, split)
    validation = sampled_holdout(cfg, holdout)
    targets = TargetBatches(holdout.train, batch_users=cfg.batch_users, seed=cfg.seed, rank=rank, world=world)
    if cfg.budget > len(targets.active):
        raise UserError(f"budget {cfg.budget} exceeds the {len(targets.active)} users with a training item; lower budget")
    real_cardinality = holdout.train.nnz / len(targets.active)
    logits = initial_logits(cfg, holdout, targets, device)  # [n, I]
    optimizer = torch.optim.Adam([logits], lr=cfg.lr)
    key = f"val_{cfg.eval.label}{cfg.select}"
    best_x = logits.detach().clone()  # the best synthetic set so far: the real users until a validation beats them

    def load(directory: str) -> dict[str, Any]:
        nonlocal best_x
        state, best_x = load_distill_state(directory, logits=logits, optimizer=optimizer)
        return state

    def fresh() -> dict[str, Any]:
        best = _validate(cfg, logits.detach(), validation)
        log.info("step 0 (the initial real users): %s = %.4f at λ=%g", key, best[key], best["lambda"])
        return {"step": 0, "best_step": 0, "best": best, "lambda": best["lambda"], "initial": best[key], "stopped": False,
                "resumes": 0, "distill_s": 0.0, "curve": [{"step": 0, "lambda": best["lambda"], key: best[key]}]}  # fmt: skip

    run = Resumable(
        session or LocalSession(join(cfg.output_dir, CHECKPOINT_DIR), keep=2),
        save=lambda directory, state: save_distill_state(
            directory, logits=logits, best_x=best_x, optimizer=optimizer, progress=state
        ),
        load=load,
        position="step",
        resized="each step's target users shared out anew",
    )
    state = run.resume(fresh)
    resumed_from = state["step"]
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []  # this step's record, its losses still on the device
    with progress_bar(total=cfg.steps, desc="distill", unit="step", enabled=rank == 0) as bar:
        bar.update(resumed_from)
        for done in run.epochs(cfg.steps):
            step = done + 1
            x = sample(cfg, logits, step)  # X̃ [n, I]
            loss, parts = distill_loss(
                x,
                targets.batch(step, device=device),
                model=cfg.model,
                lam=state["lambda"],
                real_cardinality=real_cardinality,
                cardinality_reg=cfg.cardinality_reg,
            )
            optimizer.zero_grad()
            loss.backward()
            if world > 1:
                dist.all_reduce(logits.grad)
                logits.grad /= world
            optimizer.step()
            bar.update(1)
            record: dict[str, Any] = {"step": step}
            pending.append((record, torch.stack([loss.detach(), parts["ce"], parts["cardinality"]])))
            if step % cfg.validate_every == 0 or step == cfg.steps:
                _settle(pending)
                with torch.no_grad():
                    x = sample(cfg, logits.detach(), step, validation=True)
                val = _validate(cfg, x, validation)
                state["lambda"] = val["lambda"]
                record.update({"lambda": val["lambda"], key: val[key], "mean_row_mass": float(x.sum(1).mean())})
                log.info("step %d: loss %.4f, %s = %.4f at λ=%g", step, record["loss"], key, val[key], val["lambda"])
                if val[key] > state["best"][key]:
                    state.update(best=val, best_step=step)
                    best_x = x
                if step - state["best_step"] >= cfg.patience:
                    log.info("no improvement for %d steps: stopping at step %d", step - state["best_step"], step)
                    state["stopped"] = True
            state["curve"].append(record)
            state["step"] = step
            if step % cfg.checkpoint_every == 0 or state["stopped"]:
                _settle(pending)
                state["distill_s"] += clock.seconds()
                clock = Stopwatch()
                run.checkpoint({"epoch": step, **{k: v for k, v in state["curve"][-1].items() if k != "step"}})
                if rank == 0:  # progress on the console, as training's epochs and the compressor's
                    print(f"step {step}/{cfg.steps} loss={record['loss']:.4f} best {key}={state['best'][key]:.4f}", flush=True)
            if state["stopped"]:
                break
    _settle(pending)
    distill_s = state["distill_s"] + clock.seconds()

    final = InfiniteAE.on_support(cfg.model, best_x)
    metrics, _ = search_and_test(final, validation, eval_cfg=cfg.eval, select=cfg.select)
    metrics = {
        "dataset": cfg.data.path,
        "split": split,
        "budget": cfg.budget,
        "num_workers": world,
        "device": str(device),
        "steps": state["step"],
        "best_step": state["best_step"],
        "resumed_from_step": resumed_from,
        "resumes": state["resumes"],
        "resizes": state.get("resizes", 0),
        f"initial_{key}": state["initial"],
        **metrics,
        "mean_row_mass": float(best_x.sum(1).mean()),
        "real_cardinality": real_cardinality,
        "distill_s": distill_s,
        "wall_s": wall.seconds(),
        "peak_rss_mb": peak_rss_mb(),
    }
    if rank == 0:
        metrics["entries"] = write_synthetic(
            join(cfg.output_dir, SYNTHETIC_DIR),
            best_x,
            min_weight=cfg.min_weight,
            meta={
                "source": cfg.data.path,
                "split": split,
                "step": state["best_step"],
                key: state["best"][key],
                "lambda": metrics["lambda"],
            },
        )
        write_text(join(cfg.output_dir, "curve.json"), json.dumps(state["curve"], indent=1))
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
        metrics["report"] = write_distill_report(cfg, metrics, state["curve"])
        write_text(join(cfg.output_dir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics


def worker(cfg: DistillConfig, session: Session) -> dict[str, Any]:
    """The distill job's per-worker function on Ray Train workers (``ray.num_workers``)."""
    return distill(cfg, rank=dist.get_rank(), world=dist.get_world_size(), session=session)


def save_distill_state(
    directory: str, *, logits: torch.Tensor, best_x: torch.Tensor, optimizer: torch.optim.Optimizer, progress: dict[str, Any]
) -> None:
    """The checkpoint after step ``progress["step"]`` (every worker calls this; rank 0 writes)."""
    save_files(
        directory, {STATE: {"logits": logits.detach(), "best_x": best_x, "optim": optimizer.state_dict()}}, progress=progress
    )


def load_distill_state(
    directory: str, *, logits: torch.Tensor, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], torch.Tensor]:
    """Restore ``logits`` and ``optimizer`` in place; returns the progress and the best set [n, I]."""
    require_files(directory, (STATE, PROGRESS))
    state = read_tensors(directory, STATE)
    if state["logits"].shape != logits.shape:
        raise DataError(f"{directory}: checkpoint holds {tuple(state['logits'].shape)} logits, this run {tuple(logits.shape)}; "
                        "a different budget or dataset: point output_dir elsewhere or delete its checkpoints/")  # fmt: skip
    with torch.no_grad():
        logits.copy_(state["logits"])
    optimizer.load_state_dict(state["optim"])  # moves the moments to the logits' device
    return read_progress(directory), state["best_x"].to(logits.device)
