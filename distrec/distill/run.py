"""Distill-CF's loop (Sachdeva et al., "Infinite Recommendation Networks: A Data-Centric
Approach", NeurIPS 2022), in torch; the paper's code (JAX) is ``distill.py`` of noveens/distill_cf.

    setup     read the split's train/val/test as sparse rows; logits ← rows of `budget` random
              real users (0/1); validate them as they are (step 0: the baseline to beat)
    step      X̃ = multi-Gumbel(logits) → ∞-AE regression from X̃ onto a batch of real users →
              softmax CE + cardinality → Adam on the logits (gradients averaged over workers)
    validate  every `validate_every` steps: a fresh X̃, λ searched on validation (the best λ is
              also the one later steps regress with); keep the best X̃; stop after `patience`
              steps without improvement
    finish    ∞-AE on the best X̃: λ on validation, then test; rank 0 writes the synthetic users
              (<output_dir>/users/), metrics.json, curve.json, config.yaml and the run report
              (report.md, report.html, validation.png; its URI is ``report`` in the metrics)

Every worker holds the same logits (same initial users, the same Gumbel seed per step, averaged
gradients), so only the target batches differ between workers; the ranking evaluation splits
its users between them (``evaluate_ranking`` is collective).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distrec.cli import UserError
from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.distill.config import DistillConfig
from distrec.distill.gumbel import multi_gumbel
from distrec.distill.objective import distill_loss
from distrec.distill.output import write_synthetic
from distrec.distill.report import write_distill_report
from distrec.distill.targets import TargetBatches
from distrec.eval.holdout import Holdout
from distrec.fit.search import search_and_test, search_lambda
from distrec.models.closed_form import InfiniteAE
from distrec.progress import progress
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.storage import join, write_text

__all__ = ["distill", "SYNTHETIC_DIR"]

log = logging.getLogger(__name__)

SYNTHETIC_DIR = "users"  # under output_dir: the synthetic users' Parquet + manifest
VALIDATION_SEED = 7_919  # offsets the Gumbel seed of validation draws from the training steps'


def _validate(cfg: DistillConfig, x: torch.Tensor, holdout: Holdout) -> dict[str, Any]:
    best, _, _ = search_lambda(InfiniteAE.on_support(cfg.model, x), holdout, eval_cfg=cfg.eval, select=cfg.select)
    return best


def _sample(cfg: DistillConfig, logits: torch.Tensor, seed: int) -> torch.Tensor:
    return multi_gumbel(logits, seed=seed, draws=cfg.samples_per_user, tau=cfg.tau)


def distill(cfg: DistillConfig, *, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """The whole run on this worker; returns the metrics (rank 0 also writes them)."""
    clock = Stopwatch()
    dataset = InteractionDataset(cfg.data.path, verify=cfg.data.verify)
    split = dataset.resolve_split(cfg.data.split)
    holdout = Holdout.read(dataset, split)
    targets = TargetBatches(holdout.train, batch_users=cfg.batch_users, seed=cfg.seed, rank=rank, world=world)
    if cfg.budget > len(targets.active):
        raise UserError(f"budget {cfg.budget} exceeds the {len(targets.active)} users with a training item; lower budget")
    real_cardinality = holdout.train.nnz / len(targets.active)
    initial = np.sort(np.random.default_rng(cfg.seed).choice(targets.active, size=cfg.budget, replace=False))
    logits = holdout.train.dense(initial).requires_grad_()  # [n, I]: the paper starts from real users' 0/1 rows
    optimizer = torch.optim.Adam([logits], lr=cfg.lr)
    key = f"val_{cfg.eval.label}{cfg.select}"

    best = _validate(cfg, logits.detach(), holdout)
    best_x, best_step, lam = logits.detach().clone(), 0, best["lambda"]
    initial_metric = best[key]
    curve: list[dict[str, Any]] = [{"step": 0, "lambda": lam, key: best[key]}]
    log.info("step 0 (the initial real users): %s = %.4f at λ=%g", key, best[key], lam)
    step = 0
    with progress(total=cfg.steps, desc="distill", unit="step", enabled=rank == 0) as bar:
        for step in range(1, cfg.steps + 1):
            x = _sample(cfg, logits, cfg.seed * 1_000_003 + step)  # X̃ [n, I]
            loss, parts = distill_loss(x, targets.batch(step), model=cfg.model, lam=lam,
                                       real_cardinality=real_cardinality, cardinality_reg=cfg.cardinality_reg)
            optimizer.zero_grad()
            loss.backward()
            if world > 1:
                dist.all_reduce(logits.grad)
                logits.grad /= world
            optimizer.step()
            bar.update(1)
            record: dict[str, Any] = {"step": step, "loss": loss.item(), **parts}
            if step % cfg.validate_every == 0 or step == cfg.steps:
                with torch.no_grad():
                    x = _sample(cfg, logits.detach(), cfg.seed * 1_000_003 + step + VALIDATION_SEED)
                val = _validate(cfg, x, holdout)
                lam = val["lambda"]
                record.update({"lambda": lam, key: val[key], "mean_row_mass": float(x.sum(1).mean())})
                log.info("step %d: loss %.4f, %s = %.4f at λ=%g", step, record["loss"], key, val[key], lam)
                if val[key] > best[key]:
                    best, best_x, best_step = val, x, step
                curve.append(record)
                if step - best_step >= cfg.patience:
                    log.info("no improvement for %d steps: stopping at step %d", step - best_step, step)
                    break
            else:
                curve.append(record)
    distill_s = clock.seconds()

    final = InfiniteAE.on_support(cfg.model, best_x)
    metrics, _ = search_and_test(final, holdout, eval_cfg=cfg.eval, select=cfg.select)
    metrics = {
        "dataset": cfg.data.path,
        "split": split,
        "budget": cfg.budget,
        "num_workers": world,
        "steps": step,
        "best_step": best_step,
        f"initial_{key}": initial_metric,
        **metrics,
        "mean_row_mass": float(best_x.sum(1).mean()),
        "real_cardinality": real_cardinality,
        "distill_s": distill_s,
        "wall_s": clock.seconds(),
        "peak_rss_mb": peak_rss_mb(),
    }
    if rank == 0:
        metrics["entries"] = write_synthetic(
            join(cfg.output_dir, SYNTHETIC_DIR), best_x, min_weight=cfg.min_weight,
            meta={"source": cfg.data.path, "split": split, "step": best_step, key: best[key], "lambda": metrics["lambda"]},
        )
        write_text(join(cfg.output_dir, "curve.json"), json.dumps(curve, indent=1))
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
        metrics["report"] = write_distill_report(cfg, metrics, curve)
        write_text(join(cfg.output_dir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics
