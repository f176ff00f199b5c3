"""Experiment tracking: TensorBoard event files and MLflow runs, written by rank 0 only.

Off by default; a job's config switches it on in its ``tracking`` section:

    tracking:
      tensorboard: true                 # event files in <output_dir>/tensorboard
      tensorboard_dir: null             # or a local folder shared by runs: <dir>/<run>
      mlflow_uri: file:///abs/mlruns    # or http://mlflow:5000; a plain path is a local file store
      experiment: distrec
      run_name: null                    # the MLflow run's name; null = the Ray run's name

The driver calls ``check_tracking`` before any worker starts (a missing package or a remote
output_dir for TensorBoard stops the job with a message); rank 0 opens a ``Tracker``, which logs
the flattened config once, metrics with ``step=epoch``, and closes the run as finished or
failed. The MLflow run is found again by the Ray run's name (a tag), so a resumed run goes on
logging into the same MLflow run instead of starting a second one.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distrec.config import to_dict, to_yaml
from distrec.errors import UserError
from distrec.storage import absolute, is_local, join

__all__ = [
    "TrackingConfig",
    "Tracker",
    "allow_file_store",
    "check_tracking",
    "flatten",
    "mlflow_client",
    "mlflow_key",
    "mlflow_store",
]

log = logging.getLogger(__name__)

RUN_TAG = "distrec.run"  # the Ray run's name: finds the MLflow run again when a run resumes
MLFLOW_MISSING = (
    "tracking.mlflow_uri is set, but MLflow is not installed in this environment (import mlflow failed: {error}). "
    "Install the pinned client with `make setup` (requirements/common.txt pins mlflow-skinny), or "
    "`pip install mlflow-skinny==3.17.2` into the environment the job and its Ray workers run in, "
    "or remove tracking.mlflow_uri to train without MLflow"
)


@dataclass
class TrackingConfig:
    tensorboard: bool = False
    tensorboard_dir: str | None = None  # local; None = <output_dir>/tensorboard (output_dir must be local)
    mlflow_uri: str | None = None  # None = no MLflow
    experiment: str = "distrec"  # MLflow experiment, created if missing
    run_name: str | None = None  # MLflow run name; None = the Ray run's name

    def __post_init__(self) -> None:
        if self.tensorboard_dir is not None and not self.tensorboard:
            raise ValueError("tracking.tensorboard_dir is set but tracking.tensorboard is false; set tracking.tensorboard=true")
        if self.tensorboard_dir is not None and not is_local(self.tensorboard_dir):
            raise ValueError(
                f"tracking.tensorboard_dir={self.tensorboard_dir!r}: give a local directory (event files are appended to)"
            )
        if self.mlflow_uri is not None and not self.mlflow_uri.strip():
            raise ValueError("tracking.mlflow_uri is empty; give a tracking URI, or null for no MLflow")
        if not self.experiment.strip():
            raise ValueError("tracking.experiment must not be empty")

    @property
    def enabled(self) -> bool:
        return self.tensorboard or self.mlflow_uri is not None


def check_tracking(cfg: TrackingConfig, *, output_dir: str) -> None:
    """Driver side, before any worker starts: the backends asked for are importable and can
    write where they would. Makes a local MLflow store's path absolute (workers run elsewhere)."""
    if cfg.mlflow_uri is not None:
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise UserError(MLFLOW_MISSING.format(error=e)) from None
        cfg.mlflow_uri = mlflow_store(cfg.mlflow_uri)
    if cfg.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError as e:
            raise UserError(
                f"tracking.tensorboard=true needs tensorboardX ({e}); run `make setup`, or set tracking.tensorboard=false"
            ) from None
        if cfg.tensorboard_dir is None and not is_local(output_dir):
            raise UserError(
                f"tracking.tensorboard=true writes event files into <output_dir>/tensorboard, but output_dir={output_dir!r} "
                "is not a local directory. Set tracking.tensorboard_dir to a local folder (each run writes a subfolder)"
            )
        if cfg.tensorboard_dir is not None:
            cfg.tensorboard_dir = absolute(cfg.tensorboard_dir)


def mlflow_store(uri: str) -> str:
    """A plain or relative local path as an absolute ``file://`` URI; other URIs unchanged."""
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return uri
    return Path(uri).resolve().as_uri()


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses a ``file://`` store unless ``MLFLOW_ALLOW_FILE_STORE`` is set; the config
    asked for one, so this process opts in."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def mlflow_client(uri: str):
    """An ``MlflowClient`` for ``uri`` (a file store allowed)."""
    from mlflow.tracking import MlflowClient

    allow_file_store(uri)
    return MlflowClient(tracking_uri=uri)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"dim": 8}}`` → ``{"model.dim": "8"}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_-. /``): ``val_ndcg@10`` → ``val_ndcg_at_10``."""
    return re.sub(r"[^\w\-. /]", "_", name.replace("@", "_at_"))


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class Tracker:
    """Rank 0's writer to the configured backends; does nothing when ``enabled`` is false (other
    ranks) or tracking is off. Use as a context manager: the run is closed as finished, or as
    failed if the block raised."""

    def __init__(self, cfg: TrackingConfig, *, output_dir: str, run: str, config: Any, enabled: bool = True) -> None:
        """``run``: the Ray run's name (``distrec.runtime.config.run_name``); ``config``: the job's
        config dataclass, logged once as flattened params and as ``config.yaml``."""
        self._writer = None
        self._client = None
        self._run_id: str | None = None
        if not (enabled and cfg.enabled):
            return
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter

            logdir = join(cfg.tensorboard_dir, run) if cfg.tensorboard_dir else join(output_dir, "tensorboard")
            self._writer = SummaryWriter(logdir=logdir)
            self._writer.add_text("config", "```\n" + to_yaml(config) + "```", 0)
            self._writer.flush()
        if cfg.mlflow_uri is not None:
            self._open_mlflow(cfg, run=run, config=config)

    def _open_mlflow(self, cfg: TrackingConfig, *, run: str, config: Any) -> None:
        from mlflow.entities import Param, RunStatus

        client = mlflow_client(cfg.mlflow_uri)
        found = client.get_experiment_by_name(cfg.experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(cfg.experiment)
        earlier = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run}'", max_results=1)
        if earlier:  # a resumed run: go on logging into it
            self._run_id = earlier[0].info.run_id
            client.update_run(self._run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            logged = earlier[0].data.params
        else:
            self._run_id = client.create_run(experiment_id, run_name=cfg.run_name or run, tags={RUN_TAG: run}).info.run_id
            logged = {}
        params = flatten(to_dict(config))
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v[:6000])
        if changed:  # MLflow never changes a logged param
            log.warning("MLflow run %s keeps its earlier values of %s", self._run_id, ", ".join(changed))
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self._run_id, params=new[i : i + 100])
        client.log_text(self._run_id, to_yaml(config), "config.yaml")
        self._client = client

    def log_metrics(self, metrics: dict[str, Any], *, step: int) -> None:
        """The numeric entries of ``metrics`` (others, and NaN/inf, are skipped) at ``step``."""
        values = _numeric(metrics)
        if not values:
            return
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)
            self._writer.flush()
        if self._client is not None:
            from mlflow.entities import Metric
            from mlflow.utils.time import get_current_time_millis

            now = get_current_time_millis()
            batch = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
            for i in range(0, len(batch), 1000):
                self._client.log_batch(self._run_id, metrics=batch[i : i + 1000])

    def close(self, *, failed: bool = False) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._client is not None:
            self._client.set_terminated(self._run_id, status="FAILED" if failed else "FINISHED")
            self._client = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.close(failed=kind is not None)
