"""The compare job's config (``jobs/compare.py``): one dataset, one evaluation, many models.

    data:   {path: URI, split: official}
    eval:   {ks: [10, 100]}                 # the same RankingConfig as the fit job
    select: hr@100                          # validation metric choosing each closed form's λ
    models:
      - {name: poprec}
      - {name: ease, lambdas: [...]}         # closed forms: the fit job's model configs
      - {name: infae}
      - {name: train, label: mf, config: configs/mf/ml-1m.yaml, overrides: [train.epochs=5]}
    paper: {infae: 32.82, ease: 29.88}       # published test nDCG@10 ×100 by row label, shown beside ours
    output_dir: URI

A ``train`` entry runs ``jobs/train.py``'s training (``distrec.train.run.train``, through distrec/jobs.py) from that
train config, on the comparison's dataset and split; any model the trainer knows by name (mf
today; MF-BPR, NeuMF, LightGCN as they are added) is a row without new comparison code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from distrec.config import NonNegative
from distrec.data.dataset import DataConfig
from distrec.eval.ranking import RankingConfig, metric_names
from distrec.fit.config import check_select
from distrec.models.registry import CLOSED_FORMS, config_union

__all__ = ["TrainEntry", "CompareModel", "CompareConfig", "row_label"]


@dataclass
class TrainEntry:
    name: Literal["train"]
    config: str  # a jobs/train.py YAML; its data.path, data.split and output_dir are the comparison's
    label: str  # the row's name
    overrides: list[str] = field(default_factory=list)  # dotted key=value, as on the train job's command line


CompareModel = Union[config_union(CLOSED_FORMS), TrainEntry]  # noqa: UP007  # every closed form of the model registry, or a train entry


def row_label(entry: CompareModel) -> str:
    return entry.label if isinstance(entry, TrainEntry) else entry.name


@dataclass
class CompareConfig:
    data: DataConfig
    models: list[CompareModel]
    output_dir: str
    eval: RankingConfig = field(default_factory=RankingConfig)
    select: str = "hr@100"
    columns: list[str] | None = None  # test metrics in the table; None = nDCG, HR and PSP at the first k, HR at the last, AUC
    plot: list[str] | None = None  # test metrics in the bar chart; None = the first two columns
    paper: dict[str, NonNegative[float]] = field(default_factory=dict)  # row label → published test nDCG@10 (×100)
    title: str = ""

    def __post_init__(self) -> None:
        check_select(self.select, self.eval)
        if not self.models:
            raise ValueError("models: list at least one model")
        first, last = self.eval.ks[0], self.eval.ks[-1]
        if self.columns is None:
            self.columns = [f"ndcg@{first}", f"hr@{first}"] + ([f"hr@{last}"] if last != first else []) + [f"psp@{first}", "auc"]
        if self.plot is None:
            self.plot = self.columns[:2]
        known = metric_names(self.eval) + ([f"coverage@{k}" for k in self.eval.ks] if self.eval.protocol == "full" else [])
        unknown = [m for m in self.columns + self.plot if m not in known]
        if unknown:
            raise ValueError(f"columns/plot: {unknown} are not reported metrics; choose from {known}")
        labels = [row_label(m) for m in self.models]
        if len(labels) != len(set(labels)):
            raise ValueError(f"models: row labels must be unique, got {labels}")
