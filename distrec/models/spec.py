"""What a model module declares about its model (``SPECS``), and what a model may need to know
about the data when it is built (``ModelContext``). models/registry.py collects the specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from distrec.data.dataset import Interactions
from distrec.data.histories import RatingHistories
from distrec.data.item_features import ItemFeatures

__all__ = ["ModelSpec", "ModelContext", "Task", "Loop"]

Task = Literal["rating", "ranking", "retrieval"]
Loop = Literal["tables", "dense", "als", "closed_form"]


@dataclass(frozen=True)
class ModelSpec:
    """One model, declared once, beside its code.

    ``build``: for a trained model (``loop`` "tables" or "dense") ``build(cfg, ctx: ModelContext,
    device) -> nn.Module``; for a closed form ``build(cfg, train: UserItems, *, device)``; None
    for a model whose loop makes its own state (ALS's factor rows).
    ``task``: what its training reads and how it is scored (distrec/train/tasks.py: "rating"
    regression, "ranking" top-k, "retrieval" from histories). ``needs``: what the task puts into
    the ``ModelContext`` beyond rating pairs ("histories": every rated item of a worker's users,
    so the task partitions rows by user; "item_features"). ``loop``: what trains it — "tables"
    (distrec/train/worker.py: TorchRec tables over batches), "dense" (distrec/train/dense_worker.py:
    the dense item × user matrix), "als" (distrec/train/als_worker.py: alternating least squares /
    Gibbs sweeps over factor rows), "closed_form" (one solve per λ: jobs/fit.py).
    """

    name: str  # ``model.name`` in a config: the config class's ``name`` literal
    config: type
    build: Callable[..., Any] | None
    task: Task = "rating"
    needs: tuple[str, ...] = ()
    loop: Loop = "tables"


@dataclass(frozen=True)
class ModelContext:
    """What a model may need to know about the data when it is built."""

    num_users: int
    num_items: int
    global_mean: float  # mean training rating (all workers)
    train: Interactions | None = None  # this worker's training pairs (graph models: LightGCN)
    item_vectors: np.ndarray | None = None  # float32 [I, F] content + text vectors (two-tower)
    # for content models (those whose spec lists them in ``needs``):
    rating_range: tuple[float, float] | None = None  # the dataset's rating scale (min, max)
    histories: RatingHistories | None = None  # the rated items of this worker's users
    item_features: ItemFeatures | None = None  # genres, year, texts of every item
    seed: int = 0  # the run's seed, for a model that initialises its own weights (GLocal-K)
