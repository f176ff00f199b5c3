"""A finished sweep, written down: results.parquet (one row per trial), leaderboard.md,
best_config.yaml (a config the job accepts as is) and plots, plus the usual report.md/html."""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

import matplotlib.pyplot as plt
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.ticker import MaxNLocator

from distrec.config import to_yaml
from distrec.report import Report
from distrec.storage import filesystem, join, read_text, write_text
from distrec.tune.config import SweepConfig
from distrec.tune.trials import on_ray_train, trial_config

__all__ = ["trial_rows", "write_results"]


def trial_rows(results, sweep: SweepConfig, max_epochs: int | None) -> list[dict[str, Any]]:
    """One dict per trial from a Tune ResultGrid: its values, final/best metric, epochs, and status
    (completed, stopped early by the scheduler or the job's own early stopping, or error).
    ``max_epochs`` None: the job reports once, at its end."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        series = history[sweep.metric].dropna().tolist() if history is not None and sweep.metric in history else []
        best = (min if sweep.mode == "min" else max)(series) if series else math.nan
        metrics = result.metrics or {}
        epochs = int(history["epoch"].max()) if history is not None and "epoch" in history else 0
        trial_id = metrics.get("trial_id") or posixpath.basename(result.path)
        rows.append(
            {
                "trial_id": trial_id,
                **{f"param.{k}": result.config.get(k) for k in sweep.search},
                f"final_{sweep.metric}": series[-1] if series else math.nan,
                f"best_{sweep.metric}": best,
                "epochs": epochs,
                "status": "error" if result.error else "stopped early" if max_epochs and epochs < max_epochs else "completed",
                "time_s": float(metrics.get("time_total_s", math.nan)),
                "history": [float(v) for v in series],
                **_job_metrics(sweep, trial_id),
            }
        )
    sign = 1 if sweep.mode == "min" else -1
    return sorted(rows, key=lambda r: (math.isnan(r[f"best_{sweep.metric}"]), sign * r[f"best_{sweep.metric}"]))


def write_results(rows: list[dict[str, Any]], sweep: SweepConfig, base: dict[str, Any]) -> dict[str, Any]:
    """Write every output into ``sweep.output_dir``; returns the sweep's summary."""
    out = sweep.output_dir
    fs, root = filesystem(out)
    with fs.open(f"{root}/results.parquet", "wb") as f:
        pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "history"} for r in rows]), f)
    leaderboard = _leaderboard(rows, sweep)
    write_text(join(out, "leaderboard.md"), leaderboard + "\n")
    best = next((r for r in rows if r["status"] != "error" and not math.isnan(r[f"best_{sweep.metric}"])), None)
    summary: dict[str, Any] = {"trials": len(rows), "errors": sum(r["status"] == "error" for r in rows), "metric": sweep.metric}
    if best is not None:
        params = {k: best[f"param.{k}"] for k in sweep.search}
        cfg = trial_config(sweep.job, base, params, output_dir=out, trial_id=best["trial_id"])
        cfg.output_dir = join(out, "best")
        if on_ray_train(cfg):
            cfg.ray.name = None  # retraining the best is a new run
        write_text(join(out, "best_config.yaml"), f"# best trial {best['trial_id']} of {out}\n" + to_yaml(cfg))
        summary.update(best_trial=best["trial_id"], best_params=params, best=best[f"best_{sweep.metric}"])
        summary["best_config"] = join(out, "best_config.yaml")
    report = Report(f"Sweep of {sweep.base}: {sweep.metric} ({sweep.mode})")
    report.add("Leaderboard", leaderboard)
    report.add("Sweep", "```\n" + to_yaml(sweep) + "```")
    report.add_figure("metric_per_epoch.png", _curves(rows, sweep))
    for key in sweep.search:
        report.add_figure(f"metric_vs_{key}.png", _scatter(rows, sweep, key))
    summary["report"] = report.write(out)
    return summary


def _job_metrics(sweep: SweepConfig, trial_id: str) -> dict[str, float]:
    """``sweep.also_report`` from the trial's own metrics.json (test metrics, wall time); NaN where
    the trial did not get that far."""
    if not sweep.also_report:
        return {}
    try:
        written = json.loads(read_text(join(sweep.output_dir, "trials", trial_id, "metrics.json")))
    except (OSError, ValueError):
        written = {}
    return {k: float(written[k]) if isinstance(written.get(k), (int, float)) else math.nan for k in sweep.also_report}


def _leaderboard(rows: list[dict[str, Any]], sweep: SweepConfig) -> str:
    keys = [f"param.{k}" for k in sweep.search]
    head = [
        "rank",
        "trial",
        *sweep.search,
        f"best {sweep.metric}",
        f"final {sweep.metric}",
        *sweep.also_report,
        "epochs",
        "status",
        "time s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [i, r["trial_id"], *(r[k] for k in keys), r[f"best_{sweep.metric}"], r[f"final_{sweep.metric}"],
                 *(r[k] for k in sweep.also_report), r["epochs"], r["status"], r["time_s"]]  # fmt: skip
        lines.append("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def _curves(rows: list[dict[str, Any]], sweep: SweepConfig):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in rows:
        ax.plot(range(1, len(r["history"]) + 1), r["history"], marker="o", ms=3, label=r["trial_id"])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(sweep.metric)
    ax.set_title(f"{sweep.metric} per epoch, one line per trial")
    ax.grid(alpha=0.3)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    return fig


def _scatter(rows: list[dict[str, Any]], sweep: SweepConfig, key: str):
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    points = [(r[f"param.{key}"], r[f"best_{sweep.metric}"]) for r in rows if not math.isnan(r[f"best_{sweep.metric}"])]
    xs = [p[0] for p in points]
    if all(isinstance(x, (int, float)) for x in xs):
        ax.scatter(xs, [p[1] for p in points])
        if sweep.search[key].kind == "loguniform":
            ax.set_xscale("log")
    else:  # categorical values
        labels = sorted({str(x) for x in xs})
        ax.scatter([labels.index(str(x)) for x in xs], [p[1] for p in points])
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(key)
    ax.set_ylabel(f"best {sweep.metric}")
    ax.grid(alpha=0.3)
    return fig
