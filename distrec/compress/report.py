"""The compressor job's results: the Markdown summary table (printed by jobs/compress.py) and the
run report (that table, the config, reconstruction cosine and ΔRMSE against the ratio per method)."""

from __future__ import annotations

import re
from typing import Any

from distrec.compress.config import CompressConfig
from distrec.compress.evaluate import METHODS
from distrec.config import to_yaml
from distrec.report import Report, line_figure, metrics_table

__all__ = ["summary_table", "write_compress_report"]

COLUMNS = [  # (header, metric suffix after "<method>@<ratio>x_", format)
    ("user B/row", "user_bytes_per_row", "{:.0f}"),
    ("ratio", "user_ratio", "{:.1f}×"),
    ("ratio incl. side", "user_ratio_with_side", "{:.2f}×"),
    ("user cos", "user_cosine", "{:.4f}"),
    ("item cos", "item_cosine", "{:.4f}"),
    ("ΔRMSE users", "rmse_delta_users", "{:+.4f}"),
    ("ΔRMSE items", "rmse_delta_items", "{:+.4f}"),
    ("ΔRMSE both", "rmse_delta_both", "{:+.4f}"),
    ("ΔRMSE train users", "train_users_rmse_delta", "{:+.4f}"),
    ("ΔRMSE new users", "new_users_rmse_delta", "{:+.4f}"),
    ("new users cos", "new_users_cosine", "{:.4f}"),
]


def summary_table(metrics: dict[str, Any]) -> str:
    """One row per method and ratio; a cell is blank where the run has no such metric."""
    ratios = sorted({int(m.group(1)) for k in metrics if (m := re.match(r"\w+@(\d+)x_", k))})
    lines = ["| method | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for ratio in ratios:
        for method in METHODS:
            key = f"{method}@{ratio}x_"
            if not any(k.startswith(key) for k in metrics):
                continue
            cells = [
                fmt.format(metrics[key + s]) if isinstance(metrics.get(key + s), (int, float)) else "" for _, s, fmt in COLUMNS
            ]
            lines.append(f"| {method}@{ratio}x | " + " | ".join(cells) + " |")
    base = [f"{k} = {metrics[k]:.4f}" for k in ("test_rmse", "train_users_test_rmse", "new_users_test_rmse") if k in metrics]
    return "\n".join(lines + base)


def _against_ratio(metrics: dict[str, Any], ratios: list[int], suffix: str) -> dict[str, tuple[list[int], list[float]]]:
    """method → (ratios, ``<method>@<ratio>x_<suffix>``) over the ratios the run has it for."""
    lines = {}
    for method in METHODS:
        xs = [r for r in ratios if isinstance(metrics.get(f"{method}@{r}x_{suffix}"), (int, float))]
        if xs:
            lines[method] = (xs, [metrics[f"{method}@{r}x_{suffix}"] for r in xs])
    return lines


def write_compress_report(cfg: CompressConfig, metrics: dict[str, Any]) -> str:
    """Write report.md/html, ``reconstruction.png`` and ``rmse_delta.png`` into ``cfg.output_dir``;
    returns report.html's URI."""
    ratios = sorted(cfg.ratios)
    report = Report(f"Compression of {cfg.source.run} ({', '.join(cfg.source.tables)}) at {', '.join(f'{r}×' for r in ratios)}")
    report.add("Summary", summary_table(metrics))
    report.add("Metrics", metrics_table(metrics))
    report.add("Config", "```\n" + to_yaml(cfg) + "```")
    cosine = {f"{t} cosine": _against_ratio(metrics, ratios, f"{t}_cosine") for t in cfg.source.tables}
    report.add_figure(
        "reconstruction.png",
        line_figure(cosine, xlabel="compression ratio", log2_x=True, title="reconstruction cosine against compression ratio"),
    )
    deltas = {f"ΔRMSE {part}": _against_ratio(metrics, ratios, f"rmse_delta_{part}") for part in ("users", "items", "both")}
    report.add_figure(
        "rmse_delta.png",
        line_figure(
            {k: v for k, v in deltas.items() if v},
            xlabel="compression ratio",
            log2_x=True,
            title="test RMSE change against compression ratio",
        ),
    )
    return report.write(cfg.output_dir)
