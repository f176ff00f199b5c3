"""The sweep config (``jobs/tune.py``): a base job config, a search block of dotted keys, and how
to search it.

    base: configs/mf/ml-1m.yaml          # a job config, loaded and validated like the job does
    job: train                           # which job's trainable runs a trial
    overrides: [ray.num_workers=1]       # applied to the base for every trial
    search:
      model.dim: {choice: [16, 32, 64]}
      optim.sparse_lr: {loguniform: [0.01, 0.3]}
    metric: val_rmse
    mode: min
    num_samples: 8
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    output_dir: runs/tune/mf-ml-1m
    shared_paths: []                     # on a multi-node cluster: local folders every node mounts (NFS)
    tracking: {mlflow_uri: file:///abs/mlruns, experiment: mf-ml-1m}   # one MLflow run per trial
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from distrec.config import Bound, NonNegative, Positive
from distrec.jobs import JOBS
from distrec.runtime.config import check_shared_folders
from distrec.tracking import TrackingConfig

__all__ = ["SpaceConfig", "SchedulerConfig", "SweepConfig", "SPACE_KINDS"]

JobName = Literal[tuple(JOBS)]  # the jobs of distrec/jobs.py: train, compress, fit, distill

SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclass
class SpaceConfig:
    """Exactly one of: a list of values (choice: sampled, grid: every one) or a [low, high] range."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: list[float] | None = None
    loguniform: list[float] | None = None
    randint: list[int] | None = None  # [low, high): high excluded, as Tune

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {list(SPACE_KINDS)}, got {given or 'none'}")
        values = getattr(self, given[0])
        if given[0] in ("choice", "grid") and not values:
            raise ValueError(f"{given[0]}: needs at least one value")
        if given[0] in ("uniform", "loguniform", "randint"):
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"{given[0]}: expected [low, high] with low < high, got {values}")
            if given[0] == "loguniform" and values[0] <= 0:
                raise ValueError(f"loguniform: low must be positive, got {values[0]}")

    @property
    def kind(self) -> str:
        return next(k for k in SPACE_KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        return getattr(self, self.kind)


@dataclass
class SchedulerConfig:
    name: Literal["asha", "fifo"] = "asha"
    grace_period: Positive[int] = 1  # epochs every trial runs before ASHA may stop it
    reduction_factor: Annotated[float, Bound(gt=1)] = 2.0
    max_t: Positive[int] | None = None  # epochs of the longest trial; None = the base config's train.epochs


@dataclass
class SweepConfig:
    base: str  # path of the job config every trial starts from
    search: dict[str, SpaceConfig]
    metric: str  # a per-epoch metric the job reports, e.g. val_rmse, val_ndcg@10
    output_dir: str
    job: JobName = "train"  # the job of the base config (distrec/jobs.py)
    mode: Literal["min", "max"] = "min"
    overrides: list[str] = field(default_factory=list)  # dotted key=value for the base
    also_report: list[str] = field(default_factory=list)  # final metrics shown per trial, e.g. test_ndcg@10
    num_samples: Positive[int] = 4  # samples of the space; with grid axes, samples of each grid point
    max_concurrent_trials: NonNegative[int] = 0  # 0 = as many as the cluster's CPUs hold at once
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    search_alg: Literal["random", "optuna"] = "random"  # grid axes are always enumerated
    seed: NonNegative[int] = 0
    ray_address: str | None = None  # None: $RAY_ADDRESS if set, else an embedded local Ray
    # local folders every node mounts at the same path (NFS): on a cluster of more than one node, a
    # local output_dir or input path outside them is refused (runtime/cluster.py); trials accept them too
    shared_paths: list[str] = field(default_factory=list)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # mlflow_uri: Tune's MLflow logger

    def __post_init__(self) -> None:
        check_shared_folders(self.shared_paths, "shared_paths")
        if not self.search:
            raise ValueError("search: give at least one dotted key to search, e.g. optim.sparse_lr: {loguniform: [0.01, 0.3]}")
        fixed = {o.partition("=")[0] for o in self.overrides}
        clash = sorted(fixed & set(self.search))
        if clash:
            raise ValueError(f"overrides and search both set {clash}: a searched key cannot also be fixed")
        if self.tracking.tensorboard:
            raise ValueError(
                "tracking.tensorboard: Tune already writes TensorBoard event files for every trial under "
                "<output_dir>/experiment; for each trial's own per-epoch files set tracking.tensorboard in the base config"
            )
        if self.search_alg == "optuna" and any(s.kind == "grid" for s in self.search.values()):
            raise ValueError("search_alg=optuna cannot enumerate grid axes; use choice instead of grid")
