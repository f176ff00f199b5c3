"""The fit job's config (``jobs/fit.py``): a closed-form model, the λ search and the evaluation.

data:   {path: URI, split: official}
model:  {name: ease | infae | poprec, lambdas: [...], ...}   # distrec/models/closed_form.py
eval:   {ks: [10, 100], protocol: full, ...}                 # distrec/eval/ranking.py
select: hr@100                                               # validation metric that picks λ
export_weights: true                                         # <output_dir>/weights, for jobs/serve.py
output_dir: URI
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distrec.data.dataset import DataConfig
from distrec.eval.ranking import RankingConfig, metric_names
from distrec.models.registry import CLOSED_FORMS, config_union

__all__ = ["FitConfig", "ClosedFormConfig", "check_select"]

ClosedFormConfig = config_union(CLOSED_FORMS)  # EASE, ∞-AE, PopRec: picked by ``model.name``


def check_select(select: str, eval_cfg: RankingConfig) -> None:
    """``select`` must be a metric the evaluation reports (higher is better for all of them)."""
    names = metric_names(eval_cfg)
    if select not in names:
        raise ValueError(f"select: {select!r} is not a reported metric; choose one of {names}")


@dataclass
class FitConfig:
    data: DataConfig
    model: ClosedFormConfig
    output_dir: str
    eval: RankingConfig = field(default_factory=RankingConfig)
    select: str = "hr@100"  # the validation metric that chooses λ (the ∞-AE paper: HR@100)
    export_weights: bool = True  # the chosen λ's weights to <output_dir>/weights (what jobs/serve.py reads)

    def __post_init__(self) -> None:
        check_select(self.select, self.eval)
