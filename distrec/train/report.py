"""The training run's report: config, dataset, sharding plan, metrics, per-epoch curves."""

from __future__ import annotations

import json
from typing import Any

from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.report import Report, history_figure, metrics_table
from distrec.storage import join, read_text
from distrec.train.config import TrainConfig

__all__ = ["write_train_report"]


def write_train_report(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    """Build the report from what the run wrote to ``output_dir``; returns report.html's URI."""
    history = json.loads(read_text(join(cfg.output_dir, "history.json")))
    dataset = InteractionDataset(cfg.data.path, verify="none").meta
    report = Report(f"{cfg.model.name} on {dataset.get('title', dataset.get('dataset'))}")
    summary = {k: dataset.get(k) for k in ("dataset", "users", "items", "ratings", "density", "noise_floor_rmse")}
    summary["split"] = cfg.data.split or dataset.get("default_split")
    report.add("Dataset", f"`{cfg.data.path}`\n\n" + metrics_table(summary))
    report.add("Metrics", metrics_table(metrics))
    report.add("Sharding plan", "```\n" + read_text(join(cfg.output_dir, "plan.txt")) + "\n```")
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    curves = [k for k in ("train_loss", "val_rmse", "val_mae") if any(k in h for h in history)]
    curves += sorted({k for h in history for k in h if k.startswith("val_") and "@" in k})
    if history:
        report.add_figure("history.png", history_figure(history, curves, f"{cfg.model.name}: per-epoch metrics"))
    return report.write(cfg.output_dir)
