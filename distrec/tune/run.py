"""Run a sweep with Ray Tune, or continue an interrupted one, and write its results.

The experiment lives in ``<output_dir>/experiment`` (Tune's state), each trial's run in
``<output_dir>/trials/<trial id>`` (the job's usual outputs) and ``<output_dir>/ray`` (its Train
checkpoints). ``sweep.yaml`` beside them is the resolved sweep, so ``--resume`` needs only the
path: Tune's ``Tuner.restore`` skips finished trials and restarts unfinished ones, which resume
from their own checkpoints. Tune's state is pickled, so the sweep records an HMAC of each state
file as Tune writes it, and ``--resume`` refuses any it did not record before Tune reads one
(``distrec.tune.signing``).
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

import ray
from ray import tune

from distrec.config import ConfigError, load_config, nest, to_dict, to_yaml
from distrec.errors import UserError
from distrec.jobs import get_job
from distrec.runtime.cluster import check_shared_paths
from distrec.runtime.ray import connect_ray
from distrec.storage import absolute, filesystem, join, write_text
from distrec.tracking import allow_file_store, check_tracking, mlflow_key
from distrec.tune.config import SpaceConfig, SweepConfig
from distrec.tune.report import trial_rows, write_results
from distrec.tune.signing import StateSigner, check_experiment, record_tuner
from distrec.tune.trials import on_ray_train, trainable_for

__all__ = ["sweep", "resume", "base_config"]

EXPERIMENT = "experiment"


def sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Validate the base config, run every trial, write the results; returns the summary."""
    cfg.output_dir = absolute(cfg.output_dir)
    base = base_config(cfg)
    get_job(cfg.job).check(base)
    check_tracking(cfg.tracking, output_dir=cfg.output_dir)
    fs, root = filesystem(cfg.output_dir)
    if fs.exists(f"{root}/{EXPERIMENT}"):
        raise UserError(
            f"{cfg.output_dir} already holds a sweep: continue it with `python jobs/tune.py --resume {cfg.output_dir}`, "
            "or choose another output_dir"
        )
    _connect(cfg, base)
    write_text(join(cfg.output_dir, "sweep.yaml"), to_yaml(cfg))
    write_text(join(cfg.output_dir, "base.yaml"), to_yaml(base))
    tuner = tune.Tuner(
        _trainable(cfg, to_dict(base)),
        param_space={key: _space(space) for key, space in cfg.search.items()},
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            num_samples=cfg.num_samples,
            scheduler=_scheduler(cfg, base),
            search_alg=_search_alg(cfg, cfg.max_concurrent_trials or _concurrency(base)),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=cfg.output_dir,
            verbose=1,
            callbacks=[StateSigner(output_dir=cfg.output_dir), *_callbacks(cfg)],
        ),
    )
    record_tuner(cfg.output_dir, EXPERIMENT)  # written by tune.Tuner() just now
    return _finish(tuner.fit(), cfg, base)


def resume(path: str) -> dict[str, Any]:
    """Continue the sweep in ``path`` (its output_dir, or the experiment folder inside it)."""
    path = absolute(path.rstrip("/"))
    out = posixpath.dirname(path) if posixpath.basename(path) == EXPERIMENT else path
    try:
        cfg = load_config(SweepConfig, join(out, "sweep.yaml"))
    except ConfigError as e:
        raise UserError(f"{path}: no sweep here ({e}); expected sweep.yaml and {EXPERIMENT}/ written by jobs/tune.py") from None
    base = get_job(cfg.job).load(join(out, "base.yaml"))
    check_experiment(out, EXPERIMENT)  # before Tune unpickles anything (the restored Tuner keeps recording)
    _connect(cfg, base)
    tuner = tune.Tuner.restore(
        join(out, EXPERIMENT), trainable=_trainable(cfg, to_dict(base)), resume_unfinished=True, resume_errored=True
    )
    return _finish(tuner.fit(), cfg, base)


def base_config(cfg: SweepConfig) -> Any:
    """The job config every trial starts from, validated here (not in N trials) with every
    searched value, and made location-independent: trials run in other processes with other
    working directories."""
    job = get_job(cfg.job)
    if not job.per_epoch and cfg.scheduler.name != "fifo":
        raise ConfigError(f"scheduler.name: job {cfg.job!r} reports its metrics once, at the end; use scheduler.name=fifo")
    try:
        base = job.load(cfg.base, cfg.overrides)
    except ConfigError as e:
        raise ConfigError(f"base {e}") from None
    for key, space in cfg.search.items():  # every searched value, or both ends of a range, must make a valid config
        for value in _values_to_check(space):
            load_config(job.config, cfg.base, cfg.overrides, flags=nest({key: value}))
    job.absolute(base)
    base.output_dir = cfg.output_dir
    if on_ray_train(base):
        base.ray.storage_path = join(cfg.output_dir, "ray")
        base.ray.shared_paths = _shared_paths(cfg, base)  # each trial's Train run accepts what the sweep does
    return base


def _connect(cfg: SweepConfig, base: Any) -> None:
    """Join the sweep's Ray. Trials run on any node: on a cluster of several nodes their
    locations must be shared storage (runtime/cluster.py), checked before the first trial."""
    connect_ray(cfg.ray_address)
    check_shared_paths(get_job(cfg.job).locations(base), shared=_shared_paths(cfg, base), declare="shared_paths")


def _shared_paths(cfg: SweepConfig, base: Any) -> list[str]:
    """The folders declared shared: the sweep's ``shared_paths`` and a Ray Train base config's own."""
    own = base.ray.shared_paths if on_ray_train(base) else []
    return [*own, *(p for p in cfg.shared_paths if p not in own)]


def _trainable(cfg: SweepConfig, base: dict[str, Any]):
    # A trial function that only drives its Train run (workers hold the CPUs) takes no CPU,
    # otherwise one trial with N one-CPU workers could never start on an N-CPU machine. Tune
    # needs some resource in a trial's request, hence a token 1 MiB of Ray's logical memory.
    # An in-process trial (closed forms, distillation with ray: null) computes there: one CPU.
    resources = {"CPU": 0, "memory": 2**20} if on_ray_train(base) else {"CPU": 1}
    return tune.with_resources(trainable_for(cfg.job, base, cfg.output_dir), resources)


def _values_to_check(space: SpaceConfig) -> list:
    if space.kind in ("choice", "grid"):
        return space.values
    low, high = space.values
    return [low, high - 1 if space.kind == "randint" else high]  # randint excludes high


def _space(space: SpaceConfig):
    if space.kind == "choice":
        return tune.choice(space.values)
    if space.kind == "grid":
        return tune.grid_search(space.values)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[space.kind](*space.values)


def _concurrency(base: Any) -> int:
    per_trial = base.ray.max_workers * base.ray.cpus_per_worker if on_ray_train(base) else 1
    return max(1, int(ray.cluster_resources().get("CPU", 0) // per_trial))


def _scheduler(cfg: SweepConfig, base: Any):
    if cfg.scheduler.name == "fifo":
        return tune.schedulers.FIFOScheduler()
    return tune.schedulers.ASHAScheduler(
        time_attr="epoch",  # the job's own epoch counter: right across restarts of a trial
        max_t=cfg.scheduler.max_t or base.train.epochs,
        grace_period=cfg.scheduler.grace_period,
        reduction_factor=cfg.scheduler.reduction_factor,
    )


def _search_alg(cfg: SweepConfig, concurrent: int):
    """The search algorithm, limited to ``concurrent`` trials at a time (a trial that cannot get
    its workers would otherwise wait, and time out, while others hold the CPUs)."""
    if cfg.search_alg == "random":
        return tune.search.BasicVariantGenerator(random_state=cfg.seed, max_concurrent=concurrent)
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise UserError("search_alg=optuna needs Optuna: pip install optuna (or use search_alg=random)") from None
    return tune.search.ConcurrencyLimiter(OptunaSearch(seed=cfg.seed), max_concurrent=concurrent)


def _callbacks(cfg: SweepConfig) -> list:
    """Tune's MLflow logger when the sweep asks for it: one MLflow run per trial, with the
    trial's searched values as params and every report's metrics."""
    if cfg.tracking.mlflow_uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.utils import flatten_dict

    class MLflowCallback(MLflowLoggerCallback):
        """Metric names MLflow accepts (``val_ndcg@10`` → ``val_ndcg_at_10``)."""

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {mlflow_key(k): v for k, v in flatten_dict(result).items()})

    allow_file_store(cfg.tracking.mlflow_uri)  # the callback logs from this process
    tags = {"distrec.sweep": cfg.output_dir}
    return [MLflowCallback(cfg.tracking.mlflow_uri, experiment_name=cfg.tracking.experiment, tags=tags)]


def _finish(results, cfg: SweepConfig, base: Any) -> dict[str, Any]:
    max_epochs = (cfg.scheduler.max_t or base.train.epochs) if get_job(cfg.job).per_epoch else None
    rows = trial_rows(results, cfg, max_epochs=max_epochs)
    summary = write_results(rows, cfg, to_dict(base))
    summary["leaderboard"] = join(cfg.output_dir, "leaderboard.md")
    if math.isnan(summary.get("best", math.nan)):
        errors = [r.error for r in results if r.error]
        raise UserError(f"no trial reported {cfg.metric}; first error: {errors[0] if errors else 'none'}")
    return summary
