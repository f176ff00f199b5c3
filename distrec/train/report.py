"""The training run's report: config, dataset, sharding plan, metrics, per-epoch curves, and for
attention models one user's attention over their rated items (``attention.json``)."""

from __future__ import annotations

import json
from typing import Any

from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.report import Report, barh_figure, history_figure, metrics_table
from distrec.storage import filesystem, join, read_text
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
    fs, root = filesystem(cfg.output_dir)
    if fs.exists(f"{root}/attention.json"):
        _add_attention(report, json.loads(read_text(join(cfg.output_dir, "attention.json"))))
    return report.write(cfg.output_dir)


def _add_attention(report: Report, attention: dict[str, Any], shown: int = 25) -> None:
    """The weights one user's rated items get when the model scores one of their test items."""
    target, history = attention["target"], attention["history"][:shown]
    who = f"user {attention['user']}" + (" (held out of training)" if attention["held_out"] else "")
    rated = f"rated {target['rating']:g}, predicted {target['predicted']:.2f}"
    title = f"{who}: attention over rated items for “{target['title']}” ({rated})"
    labels = [f"{h['title'][:40]} ({h['rating']:g}★)" for h in history]
    report.add("Attention", f"{title}; the {len(history)} of {len(attention['history'])} rated items with the largest weights.")
    report.add_figure(
        "attention.png", barh_figure(labels, [h["weight"] for h in history], xlabel="attention weight", title=title)
    )
