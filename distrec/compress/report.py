"""The compressor job's results as a Markdown table (printed by jobs/compress.py)."""

from __future__ import annotations

import re
from typing import Any

from distrec.compress.evaluate import METHODS

__all__ = ["summary_table"]

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
            cells = [fmt.format(metrics[key + s]) if isinstance(metrics.get(key + s), (int, float)) else "" for _, s, fmt in COLUMNS]
            lines.append(f"| {method}@{ratio}x | " + " | ".join(cells) + " |")
    base = [f"{k} = {metrics[k]:.4f}" for k in ("test_rmse", "train_users_test_rmse", "new_users_test_rmse") if k in metrics]
    return "\n".join(lines + base)
