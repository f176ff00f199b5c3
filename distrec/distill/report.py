"""The distill job's report: metrics, config, and the validation metric at every validated step
against the real users the synthetic ones started from."""

from __future__ import annotations

from typing import Any

from distrec.config import to_yaml
from distrec.distill.config import DistillConfig
from distrec.report import Report, line_figure, metrics_table

__all__ = ["write_distill_report"]


def write_distill_report(cfg: DistillConfig, metrics: dict[str, Any], curve: list[dict[str, Any]]) -> str:
    """Write report.md/html and ``validation.png`` into ``cfg.output_dir``; returns report.html's URI."""
    key = f"val_{cfg.eval.label}{cfg.select}"
    validated = [r for r in curve if key in r]
    report = Report(f"Distill-CF: {cfg.budget} synthetic users of {cfg.data.path}")
    report.add("Metrics", metrics_table(metrics))
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    panels = {key: {"synthetic users": ([r["step"] for r in validated], [r[key] for r in validated])}}
    figure = line_figure(
        panels,
        xlabel="step",
        title=f"Distill-CF: {key} per validated step",
        references={"initial real users": metrics[f"initial_{key}"]},
    )
    report.add_figure("validation.png", figure)
    return report.write(cfg.output_dir)
