"""Distill-CF's budget comparison (``jobs/distill.py --compare``), the paper's Figure: how well
a model trains on a few users, by how those users were chosen.

For each budget n of ``compare.budgets``: distil n synthetic users (a whole distill run into
``<output_dir>/budget-<n>/``, resumable like any), then train ∞-AE (``model``) and EASE
(``compare.ease``) on n rows of each sampler:

    distilled   the synthetic users just learnt (weights in [0, 1])
    random      n real users drawn uniformly among those with a training item (seeded)
    head        the n most active real users (most training items; ties by user index)

and, once, on every user (``full``). Each fit picks λ on validation (``val_users`` as in the
distill run) and is scored on test: HR@10, nDCG@10, PSP@10 (×100 in the table). Writes
``compare.json`` (every row), ``metrics.json`` (flat: ``<sampler>_<n>_<model>_test_ndcg@10``,
``full_<model>_test_ndcg@10``, ``wall_s``, ``peak_rss_mb``) and the report (the table, and per
model ``compare-<model>.png``: each metric against the number of users, log x, one line per
sampler, the full data dashed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from distrec.compare.report import header, scale
from distrec.config import to_yaml
from distrec.device import resolve_device
from distrec.distill.config import DistillConfig
from distrec.distill.output import read_synthetic
from distrec.distill.run import run_distill
from distrec.distill.worker import SYNTHETIC_DIR, sampled_holdout
from distrec.eval.holdout import Holdout
from distrec.fit.search import search_and_test
from distrec.jobs import get_job
from distrec.models.closed_form import EASE, ClosedForm, InfiniteAE
from distrec.report import Report, line_figure
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.storage import join, write_text

__all__ = ["compare_budgets", "SAMPLERS", "METRICS"]

log = logging.getLogger(__name__)

SAMPLERS = ("distilled", "random", "head")
METRICS = ("hr@10", "ndcg@10", "psp@10")


def _rows(sampler: str, budget: int, holdout: Holdout, *, distilled_uri: str, seed: int) -> torch.Tensor:
    """The n support rows [n, I] a sampler gives."""
    if sampler == "distilled":
        return read_synthetic(distilled_uri)[0]
    counts = holdout.train.counts()
    if sampler == "random":
        users = np.random.default_rng([seed, budget]).choice(np.flatnonzero(counts > 0), size=budget, replace=False)
    else:
        users = np.argsort(-counts, kind="stable")[:budget]
    return holdout.train.dense(np.sort(users))


def _models(cfg: DistillConfig, x: torch.Tensor | None, holdout: Holdout, device: torch.device) -> dict[str, ClosedForm]:
    """∞-AE and EASE on rows ``x``, or on every training user when ``x`` is None, on ``device``."""
    if x is None:
        return {
            "infae": InfiniteAE(cfg.model, holdout.train, device=device),
            "ease": EASE(cfg.compare.ease, holdout.train, device=device),
        }
    x = x.to(device)
    return {"infae": InfiniteAE.on_support(cfg.model, x), "ease": EASE.on_rows(cfg.compare.ease, x)}


def _fit(cfg: DistillConfig, x: torch.Tensor | None, holdout: Holdout, device: torch.device, **row: Any) -> list[dict[str, Any]]:
    out = []
    for name, model in _models(cfg, x, holdout, device).items():
        clock = Stopwatch()
        metrics, _ = search_and_test(model, holdout, eval_cfg=cfg.eval, select=cfg.select)
        prefix = f"test_{cfg.eval.label}"
        out.append(
            {
                **row,
                "model": name,
                "lambda": metrics["lambda"],
                **{m: metrics[prefix + m] for m in METRICS},
                "fit_s": clock.seconds(),
            }
        )
        log.info("%s, %s users, %s: test nDCG@10 %.4f", row["sampler"], row["budget"], name, out[-1]["ndcg@10"])
    return out


def compare_budgets(cfg: DistillConfig) -> dict[str, Any]:
    """Every budget's distillation and fits; returns the flat metrics (also written)."""
    clock = Stopwatch()
    get_job("distill").absolute(cfg)
    dataset = cfg.data.open()
    holdout = sampled_holdout(cfg, Holdout.read(dataset, dataset.resolve_split(cfg.data.split)))
    device = resolve_device(
        cfg.model.device, allow_gpu=cfg.ray is None or cfg.ray.use_gpu
    )  # the distillation's device serves both
    rows = _fit(
        cfg, None, holdout, device, budget=holdout.train.num_users, sampler="full"
    )  # first: the reference of every budget
    for budget in cfg.compare.budgets:
        run = replace(cfg, budget=budget, output_dir=join(cfg.output_dir, f"budget-{budget}"))
        distilled = run_distill(run)
        for sampler in SAMPLERS:
            x = _rows(sampler, budget, holdout, distilled_uri=join(run.output_dir, SYNTHETIC_DIR), seed=cfg.seed)
            extra = {"distill_s": distilled["wall_s"], "best_step": distilled["best_step"]} if sampler == "distilled" else {}
            rows += _fit(cfg, x, holdout, device, budget=budget, sampler=sampler, **extra)
        write_text(join(cfg.output_dir, "compare.json"), json.dumps(rows, indent=1))  # so far: readable while it runs
    metrics: dict[str, Any] = {"dataset": cfg.data.path, "budgets": cfg.compare.budgets, "steps": cfg.steps}
    for r in rows:
        tag = "full" if r["sampler"] == "full" else f"{r['sampler']}_{r['budget']}"
        metrics.update({f"{tag}_{r['model']}_test_{m}": r[m] for m in METRICS})
    metrics.update(wall_s=clock.seconds(), peak_rss_mb=peak_rss_mb())
    write_text(join(cfg.output_dir, "compare.json"), json.dumps(rows, indent=1))
    write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
    metrics["report"] = _report(cfg, rows, metrics)
    write_text(join(cfg.output_dir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (model, budget); per sampler its HR@10, nDCG@10, PSP@10 (×100)."""
    samplers = [s for s in (*SAMPLERS, "full") if any(r["sampler"] == s for r in rows)]
    head = ["model", "users"] + [f"{s} {header(m)}" for s in samplers for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    full = {r["model"]: r for r in rows if r["sampler"] == "full"}
    for model in dict.fromkeys(r["model"] for r in rows):
        for budget in sorted({r["budget"] for r in rows if r["sampler"] != "full"}):
            found = {r["sampler"]: r for r in rows if r["model"] == model and r["budget"] == budget} | {"full": full.get(model)}
            cells = [model, str(budget)] + [
                "–" if found.get(s) is None else f"{found[s][m] * scale(m):.2f}" for s in samplers for m in METRICS
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(cfg: DistillConfig, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    report = Report(f"Distill-CF: ∞-AE and EASE on a budget of users of {cfg.data.path}")
    report.add(
        "Test metrics (×100) by budget and sampler",
        markdown_table(rows) + f"\n\nfull: all {rows[0]['budget']} users. "
        f"Distillation: {cfg.steps} steps, {cfg.samples_per_user} draws per user, batch {cfg.batch_users or 'all'} users; "
        f"wall {metrics['wall_s']:.0f} s, peak RSS {metrics['peak_rss_mb']:.0f} MiB.",
    )
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        full = next(r for r in mine if r["sampler"] == "full")
        panels = {}
        for m in METRICS:
            lines = {}
            for s in SAMPLERS:
                points = sorted((r["budget"], r[m] * scale(m)) for r in mine if r["sampler"] == s)
                lines[s] = ([p[0] for p in points], [p[1] for p in points])
            panels[f"test {header(m)}"] = lines
        references = {"full data": {f"test {header(m)}": full[m] * scale(m) for m in METRICS}}
        title = f"{model}: test metrics (×100) by users trained on"
        figure = line_figure(panels, xlabel="users trained on (log scale)", title=title, references=references, log2_x=True)
        report.add_figure(f"compare-{model}.png", figure)
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    return report.write(cfg.output_dir)
