"""Models by name: ``model.name`` in a config picks the config class and the module to build.

A config can only name a model listed here, so configs never import code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from distrec.data.dataset import Interactions
from distrec.data.histories import RatingHistories
from distrec.data.item_features import ItemFeatures
from distrec.models.als import ALS, ALSConfig
from distrec.models.glocal_k import GLocalK, GLocalKConfig
from distrec.models.lightgcn import LightGCN, LightGCNConfig
from distrec.models.mf import BiasedMF, MFConfig
from distrec.models.mf_bpr import MFBPR, MFBPRConfig
from distrec.models.ncf import NCF, NCFConfig
from distrec.models.neumf import NeuMF, NeuMFConfig
from distrec.models.two_tower import TwoTower, TwoTowerConfig

__all__ = ["ModelConfig", "ModelContext", "build_model", "model_task", "model_loop", "model_needs"]

ModelConfig = MFConfig | GLocalKConfig | NCFConfig | MFBPRConfig | NeuMFConfig | LightGCNConfig | TwoTowerConfig | ALSConfig  # by `name`

_CLASSES: dict[type, type] = {
    MFConfig: BiasedMF,
    GLocalKConfig: GLocalK,
    NCFConfig: NCF,
    MFBPRConfig: MFBPR,
    NeuMFConfig: NeuMF,
    LightGCNConfig: LightGCN,
    TwoTowerConfig: TwoTower,
    ALSConfig: ALS,
}


@dataclass(frozen=True)
class ModelContext:
    """What a model may need to know about the data when it is built."""

    num_users: int
    num_items: int
    global_mean: float  # mean training rating (all workers)
    train: Interactions | None = None  # this worker's training pairs (graph models: LightGCN)
    item_vectors: np.ndarray | None = None  # float32 [I, F] content + text vectors (two-tower)
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
    if isinstance(cfg, MFBPRConfig):
        return MFBPR(cfg, num_users=ctx.num_users, num_items=ctx.num_items, device=device)
    if isinstance(cfg, NeuMFConfig):
        return NeuMF(cfg, num_users=ctx.num_users, num_items=ctx.num_items, device=device)
    if isinstance(cfg, LightGCNConfig):
        if ctx.train is None:
            raise ValueError("model lightgcn needs the training pairs (ModelContext.train) to build its graph")
        pairs = (ctx.train.user, ctx.train.item)
        return LightGCN(cfg, num_users=ctx.num_users, num_items=ctx.num_items, pairs=pairs, device=device)
    if isinstance(cfg, TwoTowerConfig):
        features = ctx.item_vectors if ctx.item_vectors is not None else np.zeros((ctx.num_items, 0), np.float32)
        return TwoTower(cfg, num_items=ctx.num_items, item_features=features, device=device)
    raise ValueError(f"no builder for model {cfg.name!r}")


def _model_class(cfg: ModelConfig) -> type:
    if type(cfg) not in _CLASSES:
        raise ValueError(f"no model class for {cfg.name!r}")
    return _CLASSES[type(cfg)]


def model_task(cfg: ModelConfig) -> str:
    """The task a model trains on: "rating" (explicit ratings), "ranking" (top-k) or
    "retrieval" (two towers over users' histories)."""
    if isinstance(cfg, ALSConfig):
        return "ranking" if cfg.objective == "implicit" else "rating"
    return _model_class(cfg).task


def model_needs(cfg: ModelConfig) -> tuple[str, ...]:
    """What the model reads beyond rating pairs: "histories" (every user's rated items, so the
    task partitions rows by user) and/or "item_features"."""
    return tuple(getattr(_model_class(cfg), "needs", ()))


def model_loop(cfg: ModelConfig) -> str:
    """The loop that trains it: "tables" (distrec.train.loop: TorchRec embedding tables over
    rating batches), "dense" (distrec.train.dense_loop: the dense item × user matrix) or "als"
    (distrec.train.als_loop: alternating least squares / Gibbs sweeps over factor rows)."""
    return getattr(_model_class(cfg), "loop", "tables")
