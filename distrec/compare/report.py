"""The comparison's Markdown table, one row per model, on the papers' scale.

Metrics are printed ×100, except those in ``PAPER_SCALE`` (AUC as a fraction); the column
headers say so. The run report around it (HTML, plots) is ``distrec.report``'s.
"""

from __future__ import annotations

from typing import Any

from distrec.compare.config import CompareConfig
from distrec.eval.ranking import PAPER_SCALE

__all__ = ["markdown_table", "header", "scale"]

NAMES = {
    "hr": "HR",
    "ndcg": "nDCG",
    "psp": "PSP",
    "recall": "Recall",
    "precision": "Precision",
    "mrr": "MRR",
    "auc": "AUC",
    "coverage": "Coverage",
}


def scale(metric: str) -> float:
    return PAPER_SCALE.get(metric.split("@")[0], 100.0)


def header(metric: str) -> str:
    kind, _, k = metric.partition("@")
    name = NAMES.get(kind, kind) + (f"@{k}" if k else "")
    return f"{name} (×100)" if scale(metric) == 100 else name


def _cell(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], *, cfg: CompareConfig) -> str:
    prefix = f"test_{cfg.eval.label}"
    head = ["model"] + [header(c) for c in cfg.columns] + ["paper nDCG@10", "λ", "fit + search + test (s)", "peak RSS (MiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"]]
        cells += [
            _cell(None if r.get(prefix + c) is None else r[prefix + c] * scale(c), 2 if scale(c) == 100 else 4)
            for c in cfg.columns
        ]
        lam = r.get("lambda")
        cells += [
            _cell(r.get("paper_ndcg@10"), 2),
            "–" if lam is None else f"{lam:g}",
            _cell(r["fit_s"], 1),
            _cell(r.get("peak_rss_mb"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    protocol = (
        "full ranking over all items, seen items masked"
        if cfg.eval.protocol == "full"
        else f"sampled protocol ({cfg.eval.sampled_negatives} negatives)"
    )
    lines += [
        "",
        f"Test metrics, {protocol}; λ chosen on validation {cfg.select}. Peak RSS of the fitting process "
        "(trainer rows: per Ray worker).",
    ]
    return "\n".join(lines) + "\n"
