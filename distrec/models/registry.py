"""Models by name: ``model.name`` in a config picks the config class and the module to build.

A config can only name a model listed here, so configs never import code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distrec.data.histories import RatingHistories
from distrec.data.item_features import ItemFeatures
from distrec.models.glocal_k import GLocalK, GLocalKConfig
from distrec.models.mf import BiasedMF, MFConfig
from distrec.models.ncf import NCF, NCFConfig

__all__ = ["ModelConfig", "ModelContext", "build_model", "model_task", "model_loop", "model_needs"]

ModelConfig = MFConfig | GLocalKConfig | NCFConfig  # resolved by `name` (distrec.config)

_CLASSES: dict[type, type[nn.Module]] = {MFConfig: BiasedMF, GLocalKConfig: GLocalK, NCFConfig: NCF}


@dataclass(frozen=True)
class ModelContext:
    """What a model may need to know about the data when it is built."""

    num_users: int
    num_items: int
    global_mean: float  # mean training rating (all workers)
    # for content models (those whose class lists them in ``needs``):
    rating_range: tuple[float, float] | None = None  # the dataset's rating scale (min, max)
    histories: RatingHistories | None = None  # the rated items of this worker's users
    item_features: ItemFeatures | None = None  # genres, year, texts of every item


def build_model(cfg: ModelConfig, ctx: ModelContext, device: torch.device) -> nn.Module:
    """A model with embedding tables, unsharded (on ``device``, usually meta) for the planner."""
    if isinstance(cfg, MFConfig):
        return BiasedMF(cfg, num_users=ctx.num_users, num_items=ctx.num_items, global_mean=ctx.global_mean, device=device)
    if isinstance(cfg, NCFConfig):
        assert ctx.rating_range is not None, "NCF needs the rating scale"
        return NCF(
            cfg, num_users=ctx.num_users, num_items=ctx.num_items, global_mean=ctx.global_mean, rating_range=ctx.rating_range,
            histories=ctx.histories, item_features=ctx.item_features.dense() if ctx.item_features else None, device=device,
        )
    raise ValueError(f"no builder for model {cfg.name!r}")


def _model_class(cfg: ModelConfig) -> type[nn.Module]:
    if type(cfg) not in _CLASSES:
        raise ValueError(f"no model class for {cfg.name!r}")
    return _CLASSES[type(cfg)]


def model_task(cfg: ModelConfig) -> str:
    """The task a model trains on: "rating" (explicit ratings) or "ranking" (top-k)."""
    return _model_class(cfg).task


def model_needs(cfg: ModelConfig) -> tuple[str, ...]:
    """What the model reads beyond rating pairs: "histories" (every user's rated items, so the
    task partitions rows by user) and/or "item_features"."""
    return tuple(getattr(_model_class(cfg), "needs", ()))


def model_loop(cfg: ModelConfig) -> str:
    """The loop that trains it: "tables" (distrec.train.loop: TorchRec embedding tables over
    rating batches) or "dense" (distrec.train.dense_loop: the dense item × user matrix)."""
    return getattr(_model_class(cfg), "loop", "tables")
