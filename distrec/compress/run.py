"""The compressor job's driver: check the source tables, train on Ray Train workers, evaluate,
write ``metrics.json`` and the run report.

Every shard of every source table is checked before a worker starts (sizes, and with
``source.verify: sha256`` every byte against the manifest's hash), so a corrupt or truncated
shard stops the job with the file's name instead of failing a worker mid-training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ray.train.v2.api.callback import UserCallback

from distrec.compress.config import CompressConfig
from distrec.compress.evaluate import evaluate
from distrec.compress.report import write_compress_report
from distrec.compress.worker import table_uri
from distrec.config import to_yaml
from distrec.errors import DataError, UserError
from distrec.jobs import get_job
from distrec.models.compressor import code_size
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.runtime.config import run_name
from distrec.runtime.ray import run_job_workers
from distrec.storage import join, write_text
from distrec.storage.embeddings import EmbeddingShards
from distrec.tracking import Tracker, check_tracking

__all__ = ["check_sources", "run_compress"]


def check_sources(cfg: CompressConfig) -> dict[str, int]:
    """Open and verify every source table; returns table → dim. Raises DataError naming the
    shard, or UserError for a ratio the dim cannot meet (or a tracking backend that is missing)."""
    check_tracking(cfg.tracking, output_dir=cfg.output_dir)
    dims = {}
    for table in cfg.source.tables:
        uri = table_uri(cfg, table)
        try:
            shards = EmbeddingShards(uri, verify=cfg.source.verify)
        except DataError as e:
            raise DataError(f"{e}. Stopped before training: re-export the table (jobs/train.py) or restore the file") from None
        if not shards.row_groups():
            raise DataError(f"{uri}: the embedding table has no rows")
        dims[table] = shards.dim
        for ratio in cfg.ratios:
            try:
                code_size(shards.dim, ratio, cfg.model.code_dtype)
            except ValueError as e:
                raise UserError(f"ratios: {ratio}× for table {table!r}: {e}") from None
    return dims


def run_compress(cfg: CompressConfig, callbacks: Sequence[UserCallback] = ()) -> dict[str, Any]:
    """The whole job; returns the metrics it wrote to ``<output_dir>/metrics.json``.
    ``callbacks`` see every report of the training run."""
    clock = Stopwatch()
    get_job("compress").absolute(cfg)
    dims = check_sources(cfg)
    # first: it may refuse the paths, and nothing is written
    state = run_job_workers("compress", cfg, callbacks=callbacks)
    write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
    train_s = clock.seconds()
    metrics: dict[str, Any] = {
        **{f"{t}_dim": d for t, d in dims.items()},
        "num_workers": state["world"],  # an elastic run's size at its end
        "resumes": state["resumes"],
        "resizes": state.get("resizes", 0),
        "train_wall_s": train_s,
    }
    metrics.update(evaluate(cfg))
    metrics.update(wall_s=clock.seconds(), peak_rss_mb=peak_rss_mb())
    with Tracker(cfg.tracking, output_dir=cfg.output_dir, run=run_name(cfg), config=cfg) as tracker:  # the workers' run
        tracker.log_metrics(metrics, step=cfg.fit.epochs)
    metrics["report"] = write_compress_report(cfg, metrics)
    write_text(join(cfg.output_dir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics
