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
from typing import Annotated

from distrec.config import Bound, NonNegative, Positive
from distrec.data.dataset import DataConfig
from distrec.eval.ranking import RankingConfig
from distrec.fit.config import check_select
from distrec.models.closed_form import EASEConfig, InfAEConfig
from distrec.runtime.config import RayConfig

__all__ = ["DistillConfig", "BudgetComparison"]


def _distill_grid() -> InfAEConfig:
    return InfAEConfig(lambdas=[1e-5, 1e-3, 0.1, 1.0, 5.0, 50.0])


@dataclass
class BudgetComparison:
    """``--compare``: a distillation per budget, then ∞-AE (``model``) and EASE (``ease``) on the
    distilled users, as many random users, as many head users, and on every user."""

    budgets: list[Positive[int]] = field(default_factory=lambda: [50, 100, 200, 500, 1000])
    ease: EASEConfig = field(default_factory=EASEConfig)  # ease.lambdas: its validation grid

    def __post_init__(self) -> None:
        if not self.budgets:
            raise ValueError("compare.budgets: give at least one budget (synthetic users)")


@dataclass
class DistillConfig:
    data: DataConfig
    output_dir: str  # the synthetic users (Parquet + manifest), metrics.json, curve.json
    budget: Positive[int] = 500  # synthetic users
    samples_per_user: Positive[int] = 200  # Gumbel-softmax draws summed per synthetic user and step
    tau: Positive[float] = 10.0  # Gumbel-softmax temperature
    cardinality_reg: NonNegative[float] = 1e-3  # weight of (mean synthetic row sum) / (mean real row sum)
    lr: Positive[float] = 0.04  # Adam on the logits
    steps: Positive[int] = 500
    patience: Positive[int] = 150  # stop when the validation metric has not improved for this many steps
    validate_every: Positive[int] = 25  # steps between λ searches on validation (and at step 0: the initial support)
    batch_users: Positive[int] | None = None  # real users per step (per worker); None = every user with a training item
    val_users: Positive[int] | None = None  # validation users the λ searches score (a seeded sample); None = all of them
    test_users: Positive[int] | None = None  # test users the final ∞-AE is scored on (a seeded sample); None = all of them
    checkpoint_every: Positive[int] = 25  # steps between checkpoints; a re-run with the same output_dir (or Ray run) resumes
    model: InfAEConfig = field(default_factory=_distill_grid)  # model.lambdas: the validation grid
    eval: RankingConfig = field(default_factory=RankingConfig)
    select: str = "hr@100"  # the validation metric that picks λ and the best synthetic set (the paper's)
    compare: BudgetComparison = field(default_factory=BudgetComparison)  # used by jobs/distill.py --compare only
    min_weight: Annotated[float, Bound(ge=0, lt=1)] = (
        0.0  # synthetic interactions at or below this are not written (0: every non-zero)
    )
    ray: RayConfig | None = None  # None: run in this process; else on ray.num_workers Ray Train workers
    seed: NonNegative[int] = 0

    def __post_init__(self) -> None:
        check_select(self.select, self.eval)
        if self.ray is not None and self.model.device == "cuda" and not self.ray.use_gpu:
            raise ValueError("model.device=cuda on Ray workers needs ray.use_gpu=true (a worker without a GPU sees none)")
