"""The distill suite: Distill-CF steps at the paper's settings, and where a step's time goes.

A step is what ``distrec/distill/run.py`` does per step (configs/distill/ml-1m.yaml: budget 500,
200 Gumbel draws per synthetic user, τ = 10, every real user with a training item as targets):
the multi-Gumbel sample, ∞-AE's regression onto the targets and the loss, backward (the
regression's, then the sampler's redraw), Adam. Validation, checkpoints and evaluation are not
steps and are left out.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

__all__ = ["distill_steps"]


def distill_steps(data: str, steps: int, fused: bool = True) -> dict[str, Any]:
    """``steps`` timed Distill-CF steps (after one untimed) on ``data``; ``fused=False`` samples
    with the torch ops instead of the C++ kernel (as a CPU without the build does)."""
    import torch

    import distrec.distill.gumbel as gumbel
    from distrec.config import load_config
    from distrec.distill.config import DistillConfig
    from distrec.distill.objective import distill_loss
    from distrec.distill.targets import TargetBatches
    from distrec.distill.worker import initial_logits, sample
    from distrec.eval.holdout import Holdout

    if not fused:
        gumbel._fused = lambda logits: False  # this process only: the torch ops, as without a build
    cfg = load_config(DistillConfig, "configs/distill/ml-1m.yaml", [f"data.path={data}", "output_dir=unused"])
    dataset = cfg.data.open()
    holdout = Holdout.read(dataset, dataset.resolve_split(cfg.data.split))
    targets = TargetBatches(holdout.train, batch_users=cfg.batch_users, seed=cfg.seed)
    real_cardinality = holdout.train.nnz / len(targets.active)
    logits = initial_logits(cfg, holdout, targets)
    optimizer = torch.optim.Adam([logits], lr=cfg.lr)
    lam = cfg.model.lambdas[len(cfg.model.lambdas) // 2]
    parts: dict[str, list[float]] = {"sample": [], "regression": [], "regression_backward": [], "sample_backward": [], "adam": []}
    totals = []
    for step in range(steps + 1):
        marks = [time.perf_counter()]
        x = sample(cfg, logits, step)
        marks.append(time.perf_counter())
        loss, _ = distill_loss(x, targets.batch(step), model=cfg.model, lam=lam, real_cardinality=real_cardinality,
                               cardinality_reg=cfg.cardinality_reg)  # fmt: skip
        marks.append(time.perf_counter())
        x.register_hook(lambda grad, marks=marks: marks.append(time.perf_counter()))  # the regression's backward is done
        optimizer.zero_grad()
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if step:  # the first step warms up (allocations, MKL, the kernel library)
            for name, a, b in zip(parts, marks, marks[1:]):
                parts[name].append(b - a)
            totals.append(marks[-1] - marks[0])
    return {
        "seconds": sum(totals),
        "units": steps,
        "s_per_step": statistics.median(totals),
        **{f"{name}_s": statistics.median(v) for name, v in parts.items()},
        "users": len(targets.active),
        "items": holdout.train.num_items,
        "budget": cfg.budget,
        "draws": cfg.samples_per_user,
        "sampler": "C++ kernel" if fused and gumbel._fused(logits.detach()) else "torch ops",
    }
