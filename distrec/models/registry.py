"""Models by name: ``model.name`` in a config picks the config class and the module to build.

A config can only name a model listed here, so configs never import code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distrec.models.mf import BiasedMF, MFConfig

__all__ = ["ModelConfig", "ModelContext", "build_model", "model_task"]

ModelConfig = MFConfig  # grows into a union: MFConfig | NeuMFConfig | ... (resolved by `name`)


@dataclass(frozen=True)
class ModelContext:
    """What a model may need to know about the data when it is built."""

    num_users: int
    num_items: int
    global_mean: float  # mean training rating (all workers)


def build_model(cfg: ModelConfig, ctx: ModelContext, device: torch.device) -> nn.Module:
    if isinstance(cfg, MFConfig):
        return BiasedMF(cfg, num_users=ctx.num_users, num_items=ctx.num_items, global_mean=ctx.global_mean, device=device)
    raise ValueError(f"no builder for model {cfg.name!r}")


def model_task(cfg: ModelConfig) -> str:
    """The task a model trains on: "rating" (explicit ratings) or "ranking" (top-k)."""
    if isinstance(cfg, MFConfig):
        return BiasedMF.task
    raise ValueError(f"no task for model {cfg.name!r}")
