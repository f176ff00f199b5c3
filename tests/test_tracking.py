"""Experiment tracking: the config section's checks, and real runs (training's worker function,
then the compressor on its embeddings through a real local Ray) logging to an MLflow file store
and TensorBoard event files, read back with MLflow's client and a plain TFRecord reader; Tune's
MLflow logger."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import pytest

from distrec.config import ConfigError, from_dict
from distrec.errors import UserError
from distrec.tracking import TrackingConfig, check_tracking, flatten, mlflow_client, mlflow_key, mlflow_store
from distrec.train.config import TrainConfig
from distrec.tune.config import SweepConfig
from tests.helpers import job_on_ranks, tiny_synthetic

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow-skinny not installed (make setup)")


def _train_config(data: str, tmp_path: Path, **tracking) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data},
            "model": {"name": "mf", "dim": 8, "init_std": 0.1},
            "train": {"epochs": 2, "batch_size": 512},
            "ray": {"num_workers": 1, "storage_path": str(tmp_path / "ray")},
            "output_dir": str(tmp_path / "out"),
            "tracking": tracking,
        },
    )


# -- config --------------------------------------------------------------------------------


def test_off_by_default_and_validated_on_load(tmp_path):
    cfg = _train_config("data", tmp_path)
    assert cfg.tracking == TrackingConfig() and not cfg.tracking.enabled
    with pytest.raises(ConfigError, match="tracking.tensorboard=true"):
        _train_config("data", tmp_path, tensorboard_dir="tb")
    with pytest.raises(ConfigError, match="local directory"):
        _train_config("data", tmp_path, tensorboard=True, tensorboard_dir="s3://bucket/tb")
    with pytest.raises(ConfigError, match="did you mean 'mlflow_uri'"):
        _train_config("data", tmp_path, mlflow_url="file:///x")
    with pytest.raises(ConfigError, match="mlflow_uri is empty"):
        _train_config("data", tmp_path, mlflow_uri=" ")
    sweep = {"base": "b.yaml", "search": {"model.dim": {"choice": [8]}}, "metric": "val_rmse", "output_dir": "o"}
    assert from_dict(SweepConfig, {**sweep, "tracking": {"mlflow_uri": "mlruns"}}).tracking.mlflow_uri == "mlruns"
    with pytest.raises(ConfigError, match="Tune already writes TensorBoard"):
        from_dict(SweepConfig, {**sweep, "tracking": {"tensorboard": True}})


def test_driver_checks_before_workers(tmp_path, monkeypatch):
    cfg = TrackingConfig(tensorboard=True)
    with pytest.raises(UserError, match="tensorboard_dir"):
        check_tracking(cfg, output_dir="s3://bucket/run")  # event files cannot go next to a remote output
    check_tracking(cfg, output_dir=str(tmp_path))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: `import mlflow` raises
    with pytest.raises(UserError, match="MLflow is not installed.*mlflow-skinny==3.17.2"):
        check_tracking(TrackingConfig(mlflow_uri="file:///x"), output_dir=str(tmp_path))


@needs_mlflow
def test_local_store_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrackingConfig(mlflow_uri="mlruns")
    check_tracking(cfg, output_dir=str(tmp_path))
    assert cfg.mlflow_uri == (tmp_path / "mlruns").resolve().as_uri()  # workers run in other directories
    assert mlflow_store("http://mlflow:5000") == "http://mlflow:5000"


def test_names_mlflow_accepts():
    assert mlflow_key("val_ndcg@10") == "val_ndcg_at_10" and mlflow_key("user-4x/loss") == "user-4x/loss"
    assert flatten({"model": {"dim": 8, "hidden": [16]}, "x": None}) == {"model.dim": "8", "model.hidden": "[16]", "x": "None"}


# -- real runs -----------------------------------------------------------------------------


def _scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """tag → {step: value} from every TensorBoard event file under ``logdir`` (TFRecord framing:
    u64 length, u32 crc, Event proto, u32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no event files under {logdir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def _run(client, experiment: str, name: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`distrec.run` = '{name}'")
    assert len(runs) == 1, runs
    return runs[0]


@needs_mlflow
@pytest.mark.slow
def test_training_then_compressor_log_to_mlflow_and_tensorboard(local_ray, tmp_path):
    """Training logs from its rank 0 (here the job's worker function on a gloo rank, as Ray Train
    runs it: tests/helpers.py), the compressor from its driver, through a real Ray run."""
    from distrec.compress.config import CompressConfig
    from distrec.compress.run import run_compress
    from distrec.runtime.config import run_name
    from distrec.train.run import check_config

    data = str(tmp_path / "data")
    tiny_synthetic(data, users=120, items=80, ratings=4000)
    store = (tmp_path / "mlruns").as_uri()
    cfg = _train_config(data, tmp_path, tensorboard=True, mlflow_uri=store, experiment="tiny")
    check_config(cfg)  # what the driver checks first
    metrics = job_on_ranks("train", cfg, str(tmp_path / "ckpt"), world=1)

    client = mlflow_client(store)
    run = _run(client, "tiny", run_name(cfg))
    assert run.info.status == "FINISHED" and run.info.run_name == run_name(cfg)
    params = run.data.params
    assert params["model.dim"] == "8" and params["train.epochs"] == "2" and params["ray.num_workers"] == "1"
    for name in ("train_loss", "val_rmse"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], (name, history)  # one value per epoch, step = epoch
    assert run.data.metrics["test_rmse"] == pytest.approx(metrics["test_rmse"])
    val = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_rmse")}
    artifact = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl")))
    assert "mlflow_uri: " + store in artifact.read_text()

    scalars = _scalars(tmp_path / "out" / "tensorboard")
    assert set(scalars["val_rmse"]) == {1, 2} and set(scalars["train_loss"]) == {1, 2}
    assert scalars["val_rmse"][2] == pytest.approx(val[2], rel=1e-6)  # the same figures in both backends
    assert "test_rmse" in scalars

    # the compressor, on the embeddings that run exported: its per-model epochs, same module
    ccfg = from_dict(
        CompressConfig,
        {
            "source": {"run": str(tmp_path / "out"), "tables": ["item"]},
            "ratios": [4],
            "model": {"hidden": [16], "token_dim": 8},
            "fit": {"epochs": 2, "batch_size": 32},
            "holdout": {"table": None},
            "ray": {"num_workers": 1, "storage_path": str(tmp_path / "ray")},
            "output_dir": str(tmp_path / "compressed"),
            "tracking": {"tensorboard": True, "tensorboard_dir": str(tmp_path / "tb"), "mlflow_uri": store, "experiment": "tiny"},
        },
    )
    run_compress(ccfg)
    crun = _run(client, "tiny", run_name(ccfg))
    assert crun.info.status == "FINISHED" and crun.data.params["ratios"] == "[4]"
    assert sorted(m.step for m in client.get_metric_history(crun.info.run_id, "item-4x/loss")) == [1, 2]
    cscalars = _scalars(tmp_path / "tb" / run_name(ccfg))  # a shared tensorboard_dir: one folder per run
    assert set(cscalars["item-4x/loss"]) == {1, 2} and "wall_s" in cscalars  # and the driver's evaluation


@needs_mlflow
def test_tune_mlflow_logger_logs_each_trial(tmp_path):
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.experiment import Trial

    from distrec.tune.run import _callbacks

    sweep = {"base": "b.yaml", "search": {"model.dim": {"choice": [8]}}, "metric": "val_rmse", "output_dir": str(tmp_path)}
    assert _callbacks(from_dict(SweepConfig, sweep)) == []
    store = (tmp_path / "mlruns").as_uri()
    (callback,) = _callbacks(from_dict(SweepConfig, {**sweep, "tracking": {"mlflow_uri": store, "experiment": "sweep"}}))
    assert isinstance(callback, MLflowLoggerCallback)
    trial = Trial("run_trial", config={"model.dim": 8}, stub=True)
    callback.setup()
    callback.log_trial_start(trial)
    for epoch in (1, 2):
        callback.log_trial_result(epoch, trial, {"training_iteration": epoch, "epoch": epoch, "val_ndcg@10": 0.1 * epoch})
    callback.log_trial_end(trial)
    client = mlflow_client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert run.data.params["model.dim"] == "8" and run.data.tags["distrec.sweep"] == str(tmp_path)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_ndcg_at_10")] == pytest.approx([0.1, 0.2])
