"""What one trial runs, per job: the base config with the trial's values, run as the job would.

A trial of an iterative job (training, compression) is a whole Ray Train run (Train V2 + Tune:
the trial function is the Train driver). Its run name is derived from the trial id and its
storage is the sweep's, so a trial Tune retries or restores resumes from its own last
checkpoint instead of starting over. A job whose per-epoch reports carry the sweep's metric
forwards them to Tune (``TuneReportCallback``), which is what lets ASHA stop it; the others
report their final metrics once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from distrec.compress.config import CompressConfig
from distrec.compress.launch import check_sources, run_compress
from distrec.config import from_dict, merge, nest
from distrec.data.dataset import InteractionDataset
from distrec.distill.config import DistillConfig
from distrec.distill.launch import run_distill
from distrec.fit.config import FitConfig
from distrec.fit.run import fit_closed_form
from distrec.storage import join
from distrec.train.config import TrainConfig
from distrec.train.launch import check_config, fit

__all__ = ["Job", "JOBS", "on_ray_train", "trial_config", "trainable_for"]


@dataclass(frozen=True)
class Job:
    config: type  # the job's config dataclass
    run: Callable[..., dict[str, Any]]  # run(cfg, callbacks) -> the metrics it wrote to metrics.json
    check: Callable[[Any], Any]  # everything that can fail before a trial starts (data, sources)
    per_epoch: bool  # its per-epoch reports carry the metrics a sweep optimises
    paths: tuple[str, ...]  # dotted keys of input locations, made absolute for the trials


def on_ray_train(cfg: Any) -> bool:
    """Whether a trial of this config is a Ray Train run (its workers hold the CPUs) rather than
    work in the trial's own process (closed forms, ``ray: null`` distillation)."""
    ray = cfg.get("ray") if isinstance(cfg, dict) else getattr(cfg, "ray", None)
    return ray is not None


def _closed_form(cfg: FitConfig, callbacks: Sequence = ()) -> dict[str, Any]:
    return fit_closed_form(cfg)


def _distill(cfg: DistillConfig, callbacks: Sequence = ()) -> dict[str, Any]:
    return run_distill(cfg)


def _dataset(cfg: Any) -> InteractionDataset:
    return cfg.data.open()


JOBS = {
    "train": Job(TrainConfig, fit, check_config, per_epoch=True, paths=("data.path",)),
    # the compressor's sweep metrics (rmse deltas, cosines) come from the evaluation at the end
    "compress": Job(CompressConfig, run_compress, check_sources, per_epoch=False, paths=("source.run",)),
    # EASE / ∞-AE: a trial solves in its own process; search model.lambdas one λ per trial
    "fit": Job(FitConfig, _closed_form, _dataset, per_epoch=False, paths=("data.path",)),
    # Distill-CF reports its final ∞-AE metrics once (validation picks its best step inside)
    "distill": Job(DistillConfig, _distill, _dataset, per_epoch=False, paths=("data.path",)),
}


def trial_config(job: str, base: dict[str, Any], params: dict[str, Any], *, output_dir: str, trial_id: str):
    """The base config (plain data, paths absolute, the sweep's Ray storage: ``base_config``) with
    the trial's dotted values applied, its own output folder and Train run name."""
    raw = merge(base, nest(params))
    raw["output_dir"] = join(output_dir, "trials", trial_id)
    if on_ray_train(raw):
        raw["ray"] = {**raw["ray"], "name": f"trial-{trial_id}"}
    return from_dict(JOBS[job].config, raw, source=f"trial {trial_id}")


def trainable_for(job: str, base: dict[str, Any], output_dir: str) -> Callable[[dict[str, Any]], None]:
    """The Tune function trainable that runs one trial of ``job``."""
    spec = JOBS[job]

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
