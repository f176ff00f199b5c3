"""The report's table (Markdown) and bar chart (PNG), from its rows.

Metrics are printed on the papers' scale: ×100, except those in ``PAPER_SCALE`` (AUC as a
fraction); the column headers say so.
"""

from __future__ import annotations

import io
from typing import Any

from distrec.eval.ranking import PAPER_SCALE
from distrec.report.config import ReportConfig

__all__ = ["markdown_table", "bar_chart", "scale"]

NAMES = {"hr": "HR", "ndcg": "nDCG", "psp": "PSP", "recall": "Recall", "precision": "Precision", "mrr": "MRR", "auc": "AUC", "coverage": "Coverage"}


def scale(metric: str) -> float:
    return PAPER_SCALE.get(metric.split("@")[0], 100.0)


def _header(metric: str) -> str:
    kind, _, k = metric.partition("@")
    name = NAMES.get(kind, kind) + (f"@{k}" if k else "")
    return f"{name} (×100)" if scale(metric) == 100 else name


def _cell(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], *, cfg: ReportConfig, title: str) -> str:
    prefix = f"test_{cfg.eval.label}"
    head = ["model"] + [_header(c) for c in cfg.columns] + ["paper nDCG@10", "λ", "fit + search + test (s)", "peak RSS (MiB)"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"]]
        cells += [_cell(None if r.get(prefix + c) is None else r[prefix + c] * scale(c), 2 if scale(c) == 100 else 4) for c in cfg.columns]
        lam = r.get("lambda")
        cells += [_cell(r.get("paper_ndcg@10"), 2), "–" if lam is None else f"{lam:g}", _cell(r["fit_s"], 1), _cell(r.get("peak_rss_mb"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    protocol = "full ranking over all items, seen items masked" if cfg.eval.protocol == "full" else f"sampled protocol ({cfg.eval.sampled_negatives} negatives)"
    lines += ["", f"Test metrics, {protocol}; λ chosen on validation {cfg.select}. Peak RSS of the fitting process "
              "(trainer rows: per Ray worker)."]
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict[str, Any]], *, cfg: ReportConfig, title: str) -> bytes:
    """Grouped bars of ``cfg.plot`` metrics per model (papers' scale); the published nDCG@10 as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = f"test_{cfg.eval.label}"
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) * len(cfg.plot)), 4.0))
    width = 0.8 / len(cfg.plot)
    for j, metric in enumerate(cfg.plot):
        xs = [i + (j - (len(cfg.plot) - 1) / 2) * width for i in range(len(rows))]
        values = [(r.get(prefix + metric) or 0.0) * scale(metric) for r in rows]
        bars = ax.bar(xs, values, width, label=_header(metric))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        if metric == "ndcg@10":
            paper = [(x, r["paper_ndcg@10"]) for x, r in zip(xs, rows) if r.get("paper_ndcg@10") is not None]
            if paper:
                ax.scatter(*zip(*paper), marker="_", s=400, color="black", zorder=3, label="paper nDCG@10")
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
