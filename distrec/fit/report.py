"""The fit job's report: config, dataset and split, every λ tried with its validation metrics,
the test metrics, and test HR@k / nDCG@k against k."""

from __future__ import annotations

from typing import Any

from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.fit.config import FitConfig
from distrec.report import Report, line_figure, metrics_table

__all__ = ["write_fit_report"]

CURVES = ("hr", "ndcg")  # the metrics plotted against k


def write_fit_report(cfg: FitConfig, dataset: InteractionDataset, metrics: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """Write report.md/html and ``test_at_k.png`` into ``cfg.output_dir``; returns report.html's URI."""
    split = metrics["split"]
    summary = {k: dataset.meta.get(k) for k in ("dataset", "users", "items", "ratings", "density")}
    summary.update(split=split, **{f"{part}_pairs": n for part, n in dataset.split_counts(split).items()})
    report = Report(f"{cfg.model.name} on {dataset.meta.get('title', dataset.meta.get('dataset'))}")
    report.add("Dataset", f"`{cfg.data.path}`\n\n" + metrics_table(summary))
    report.add(f"λ search (chosen by {metrics['select']})", _lambda_table(trials))
    report.add("Metrics", metrics_table(metrics))
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    label = cfg.eval.label
    panels = {
        f"test {label}{name}@k": {cfg.model.name: (cfg.eval.ks, [metrics[f"test_{label}{name}@{k}"] for k in cfg.eval.ks])}
        for name in CURVES
        if all(f"test_{label}{name}@{k}" in metrics for k in cfg.eval.ks)
    }
    report.add_figure("test_at_k.png", line_figure(panels, xlabel="k", title=f"{cfg.model.name}: test metrics against k"))
    return report.write(cfg.output_dir)


def _lambda_table(trials: list[dict[str, Any]]) -> str:
    """One row per λ tried: its validation metrics, or why it was skipped."""
    columns = list(dict.fromkeys(k for t in trials for k in t if k.startswith("val_")))
    extra = ["seconds"] + (["skipped"] if any("skipped" in t for t in trials) else [])
    head = ["λ", *columns, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        cells = [t["lambda"], *(t.get(c, "") for c in [*columns, *extra])]
        lines.append("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)
