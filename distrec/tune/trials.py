"""What one trial runs, per job: the base config with the trial's values, trained as the job would.

A training trial is a whole Ray Train run (Train V2 + Tune: the trial function is the Train
driver). Its run name is derived from the trial id and its storage is the sweep's, so a trial
Tune retries or restores resumes from its own last checkpoint instead of starting over; every
epoch's metrics reach Tune through ``TuneReportCallback``, which is what lets ASHA stop it.
"""

from __future__ import annotations

from typing import Any, Callable

from distrec.config import merge, from_dict, nest
from distrec.storage import join
from distrec.train.config import TrainConfig

__all__ = ["trial_config", "trainable_for"]


def trial_config(base: dict[str, Any], params: dict[str, Any], *, output_dir: str, trial_id: str) -> TrainConfig:
    """The base config (plain data, paths absolute) with the trial's dotted values applied."""
    raw = merge(base, nest(params))
    raw["output_dir"] = join(output_dir, "trials", trial_id)
    raw["ray"] = {**raw.get("ray", {}), "name": f"trial-{trial_id}", "storage_path": join(output_dir, "ray")}
    return from_dict(TrainConfig, raw, source=f"trial {trial_id}")


def _train_trainable(base: dict[str, Any], output_dir: str) -> Callable[[dict[str, Any]], None]:
    def run_trial(params: dict[str, Any]) -> None:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from distrec.train.launch import fit

        trial_id = ray.tune.get_context().get_trial_id()
        fit(trial_config(base, params, output_dir=output_dir, trial_id=trial_id), callbacks=[TuneReportCallback()])

    return run_trial


def trainable_for(job: str, base: dict[str, Any], output_dir: str) -> Callable[[dict[str, Any]], None]:
    """The Tune function trainable for ``job`` (only jobs/train.py's iterative trainers so far)."""
    if job == "train":
        return _train_trainable(base, output_dir)
    raise ValueError(f"job={job!r}: no trainable for it")
