"""What one trial runs, per job: the base config with the trial's values, run as the job would.

A trial of an iterative job (training, compression) is a whole Ray Train run (Train V2 + Tune:
the trial function is the Train driver). Its run name is derived from the trial id and its
storage is the sweep's, so a trial Tune retries or restores resumes from its own last
checkpoint instead of starting over. A job whose per-epoch reports carry the sweep's metric
(``per_epoch`` in distrec/jobs.py) forwards them to Tune (``TuneReportCallback``), which is what
lets ASHA stop it; the others report their final metrics once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from distrec.config import from_dict, merge, nest
from distrec.jobs import get_job
from distrec.storage import join

__all__ = ["on_ray_train", "trial_config", "trainable_for"]


def on_ray_train(cfg: Any) -> bool:
    """Whether a trial of this config is a Ray Train run (its workers hold the CPUs) rather than
    work in the trial's own process (closed forms, ``ray: null`` distillation)."""
    ray = cfg.get("ray") if isinstance(cfg, dict) else getattr(cfg, "ray", None)
    return ray is not None


def trial_config(job: str, base: dict[str, Any], params: dict[str, Any], *, output_dir: str, trial_id: str):
    """The base config (plain data, paths absolute, the sweep's Ray storage: ``base_config``) with
    the trial's dotted values applied, its own output folder and Train run name."""
    raw = merge(base, nest(params))
    raw["output_dir"] = join(output_dir, "trials", trial_id)
    if on_ray_train(raw):
        raw["ray"] = {**raw["ray"], "name": f"trial-{trial_id}"}
    return from_dict(get_job(job).config, raw, source=f"trial {trial_id}")


def trainable_for(job: str, base: dict[str, Any], output_dir: str) -> Callable[[dict[str, Any]], None]:
    """The Tune function trainable that runs one trial of ``job``."""
    spec = get_job(job)

    def run_trial(params: dict[str, Any]) -> None:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        trial_id = ray.tune.get_context().get_trial_id()
        cfg = trial_config(job, base, params, output_dir=output_dir, trial_id=trial_id)
        callbacks: Sequence = [TuneReportCallback()] if spec.per_epoch else []
        metrics = spec.run(cfg, callbacks)
        if not spec.per_epoch:
            ray.tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    return run_trial
