"""The distill job's config (``jobs/distill.py``): Distill-CF's settings, the ∞-AE it learns for,
the validation that keeps the best synthetic set, and where it runs.

    data:   {path: URI, split: official}          # the real users (a prepared dataset, any URI)
    budget: 500                                    # synthetic users
    samples_per_user: 200, tau: 10.0, cardinality_reg: 1e-3
    lr: 0.04, steps: 500, patience: 150, validate_every: 25, batch_users: null
    val_users: null, test_users: null, checkpoint_every: 25
    model:  {name: infae, depth: 1, lambdas: [...]}   # the kernel; lambdas = the validation λ grid
    eval:   {ks: [10, 100]}, select: hr@100
    compare: {budgets: [50, 100, 200, 500, 1000], ease: {lambdas: [...]}}   # jobs/distill.py --compare
    ray:    null | {num_workers: 1, ...}           # null: in this process; else Ray Train workers
    output_dir: URI, seed: 0

Defaults are the paper's (Sachdeva et al., NeurIPS 2022, and its code's ``hyper_params.py``);
its λ grid for distillation is {1e-5, 1e-3, 0.1, 1, 5, 50}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distrec.data.dataset import DataConfig
from distrec.eval.ranking import RankingConfig
from distrec.fit.config import check_select
from distrec.models.closed_form import EASEConfig, InfAEConfig
from distrec.train.config import RayConfig

__all__ = ["DistillConfig", "BudgetComparison"]


def _distill_grid() -> InfAEConfig:
    return InfAEConfig(lambdas=[1e-5, 1e-3, 0.1, 1.0, 5.0, 50.0])


@dataclass
class BudgetComparison:
    """``--compare``: a distillation per budget, then ∞-AE (``model``) and EASE (``ease``) on the
    distilled users, as many random users, as many head users, and on every user."""

    budgets: list[int] = field(default_factory=lambda: [50, 100, 200, 500, 1000])
    ease: EASEConfig = field(default_factory=EASEConfig)  # ease.lambdas: its validation grid

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError("compare.budgets must be a non-empty list of positive user counts")


@dataclass
class DistillConfig:
    data: DataConfig
    output_dir: str  # the synthetic users (Parquet + manifest), metrics.json, curve.json
    budget: int = 500  # synthetic users
    samples_per_user: int = 200  # Gumbel-softmax draws summed per synthetic user and step
    tau: float = 10.0  # Gumbel-softmax temperature
    cardinality_reg: float = 1e-3  # weight of (mean synthetic row sum) / (mean real row sum)
    lr: float = 0.04  # Adam on the logits
    steps: int = 500
    patience: int = 150  # stop when the validation metric has not improved for this many steps
    validate_every: int = 25  # steps between λ searches on validation (and at step 0: the initial support)
    batch_users: int | None = None  # real users per step (per worker); None = every user with a training item
    val_users: int | None = None  # validation users the λ searches score (a seeded sample); None = all of them
    test_users: int | None = None  # test users the final ∞-AE is scored on (a seeded sample); None = all of them
    checkpoint_every: int = 25  # steps between checkpoints; a re-run with the same output_dir (or Ray run) resumes
    model: InfAEConfig = field(default_factory=_distill_grid)  # model.lambdas: the validation grid
    eval: RankingConfig = field(default_factory=RankingConfig)
    select: str = "hr@100"  # the validation metric that picks λ and the best synthetic set (the paper's)
    compare: BudgetComparison = field(default_factory=BudgetComparison)  # used by jobs/distill.py --compare only
    min_weight: float = 0.0  # synthetic interactions at or below this are not written (0: every non-zero)
    ray: RayConfig | None = None  # None: run in this process; else on ray.num_workers Ray Train workers
    seed: int = 0

    def __post_init__(self) -> None:
        check_select(self.select, self.eval)
        positive = {"budget": self.budget, "samples_per_user": self.samples_per_user, "steps": self.steps,
                    "validate_every": self.validate_every, "patience": self.patience,
                    "checkpoint_every": self.checkpoint_every}
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value}")
        if self.tau <= 0 or self.lr <= 0 or self.cardinality_reg < 0:
            raise ValueError("tau and lr must be positive, cardinality_reg non-negative")
        for key in ("batch_users", "val_users", "test_users"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive (or null for every user)")
        if not 0 <= self.min_weight < 1:
            raise ValueError("min_weight must be in [0, 1)")
        if self.ray is not None and self.model.device == "cuda" and not self.ray.use_gpu:
            raise ValueError("model.device=cuda on Ray workers needs ray.use_gpu=true (a worker without a GPU sees none)")
