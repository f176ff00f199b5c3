"""The compare job's body: every listed model on the same split, evaluated the same way.

Closed forms are fitted here (λ search on validation, then test: ``distrec/fit/search.py``).
``train`` entries run the trainer (``distrec.train.run.train``, Ray Train + TorchRec) and are
then scored on test with the same protocol: from the trainer's own ``test_*`` ranking metrics
when its task reports them, else from the factor tables it exported (``distrec/eval/factors.py``).
Each row records its fit time (fit + λ search + test scoring) and the peak RSS of the process
that fitted it (reset between rows; train rows report the peak of their Ray workers). The
table, one bar chart per plotted metric and the config go into a ``distrec.report.Report``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from distrec.compare.config import CompareConfig, CompareModel, TrainEntry, row_label
from distrec.compare.report import header, markdown_table, scale
from distrec.config import to_yaml
from distrec.device import resolve_device
from distrec.eval.factors import exported_scorer
from distrec.eval.holdout import Holdout
from distrec.eval.ranking import evaluate_ranking
from distrec.fit.search import search_and_test
from distrec.jobs import get_job
from distrec.models.registry import build_closed_form
from distrec.report import Report, bar_figure
from distrec.resources import Stopwatch, peak_rss_mb, reset_peak_rss
from distrec.storage import join, write_text

__all__ = ["run_compare"]

log = logging.getLogger(__name__)


def _closed_form(entry: CompareModel, cfg: CompareConfig, holdout: Holdout) -> dict[str, Any]:
    model = build_closed_form(entry, holdout.train, device=resolve_device(entry.device))  # type: ignore[arg-type, union-attr]
    metrics, _ = search_and_test(model, holdout, eval_cfg=cfg.eval, select=cfg.select)
    return metrics


def _trained(entry: TrainEntry, cfg: CompareConfig, holdout: Holdout, split: str) -> dict[str, Any]:
    out = join(cfg.output_dir, entry.label)
    forced = [
        f"data.path={cfg.data.path}",
        f"data.split={split}",
        f"output_dir={out}",
        f"ray.storage_path={join(cfg.output_dir, 'ray')}",
        f"ray.name={entry.label}-{time.strftime('%Y%m%d-%H%M%S')}",  # a fresh run each time, never a resume
    ]
    job = get_job("train")  # the registry imports the trainer (TorchRec) only now
    metrics = job.run(job.load(entry.config, [*entry.overrides, *forced]))
    wanted = f"test_{cfg.eval.label}{cfg.select}"
    if wanted not in metrics:  # the trainer's task scores ratings, not rankings: rank by its factors
        metrics = {
            **metrics,
            **evaluate_ranking(
                exported_scorer(out),
                target=holdout.test,
                seen=holdout.seen("test"),
                cfg=cfg.eval,
                prefix="test",
                propensity=holdout.propensity(),
            ),
        }
    return {**metrics, "peak_rss_mb": metrics.get("peak_rss_mb_per_worker")}


def run_compare(cfg: CompareConfig) -> dict[str, Any]:
    clock = Stopwatch()
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    holdout = Holdout.read(dataset, split)
    rows = []
    for entry in cfg.models:
        label = row_label(entry)
        log.info("-- %s", label)
        reset_peak_rss()
        fit_clock = Stopwatch()
        if isinstance(entry, TrainEntry):
            metrics = _trained(entry, cfg, holdout, split)
        else:
            metrics = {**_closed_form(entry, cfg, holdout), "peak_rss_mb": peak_rss_mb()}
        row = {"model": label, "fit_s": fit_clock.seconds(), "paper_ndcg@10": cfg.paper.get(label), **metrics}
        rows.append(row)
        log.info("%s: test_ndcg@10 = %s, %.1f s", label, row.get("test_ndcg@10"), row["fit_s"])
    title = cfg.title or f"Top-k on {cfg.data.path} (split {split})"
    prefix = f"test_{cfg.eval.label}"
    report = Report(title)
    report.add("Test metrics", markdown_table(rows, cfg=cfg))
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    for metric in cfg.plot:
        values = [(r.get(prefix + metric) or 0.0) * scale(metric) for r in rows]
        report.add_figure(
            f"{metric.replace('@', '_')}.png",
            bar_figure([r["model"] for r in rows], values, ylabel=header(metric), title=f"test {header(metric)}"),
        )
    report.write(cfg.output_dir)
    write_text(join(cfg.output_dir, "report.json"), json.dumps({"title": title, "rows": rows}, indent=1, default=str))
    write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
    summary: dict[str, Any] = {f"{r['model']}_test_{c}": r.get(f"test_{cfg.eval.label}{c}") for r in rows for c in cfg.columns}
    summary.update({f"{r['model']}_fit_s": r["fit_s"] for r in rows})
    peaks = [r["peak_rss_mb"] for r in rows if r["peak_rss_mb"] is not None]
    summary.update(report=join(cfg.output_dir, "report.md"), wall_s=clock.seconds(), max_row_peak_rss_mb=max(peaks, default=None))
    write_text(join(cfg.output_dir, "metrics.json"), json.dumps(summary, indent=1))
    return summary
