"""Biased matrix factorisation for rating prediction (Koren, Bell & Volinsky 2009).

    r̂(u, i) = μ + b_u + b_i + p_u · q_i
    loss     = mean over ratings of (r̂ - r)² + l2 · (|p_u|² + |q_i|²) + bias_l2 · (b_u² + b_i²)

The L2 term is on the rows each rating touches, as in the SGD formulation of the paper.
Factors and biases are separate TorchRec tables (``user``, ``item``, ``user_bias``,
``item_bias``; a bias row is 4 wide, fbgemm's minimum, with the bias in column 0). Sharing one
row would let the large bias gradients dominate a row-wise Adagrad accumulator and starve the
factors of learning rate; TorchRec still runs all four lookups in one fused kernel call.
μ is a dense parameter, initialised to the training mean and synchronised by DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from distrec.models.tables import TableSpec, ids_to_kjt, padded_width, table_config

__all__ = ["MFConfig", "BiasedMF"]


@dataclass
class MFConfig:
    name: Literal["mf"] = "mf"
    dim: int = 64
    init_std: float = 0.01
    l2: float = 0.05  # on the factors of the rows a rating touches
    bias_l2: float = 0.01  # on the biases of the rows a rating touches

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError("model.dim must be at least 1")
        if min(self.init_std, self.l2, self.bias_l2) < 0:
            raise ValueError("model.init_std, model.l2 and model.bias_l2 must be non-negative")


class BiasedMF(nn.Module):
    task = "rating"

    def __init__(self, cfg: MFConfig, *, num_users: int, num_items: int, global_mean: float, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        width = padded_width(cfg.dim)

        def factors(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            values = torch.zeros(rows, cols)
            values[:, : cfg.dim] = torch.randn(rows, cfg.dim, generator=gen) * cfg.init_std
            return values

        def zeros(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            return torch.zeros(rows, cols)

        self.tables = [
            TableSpec("user", num_users, width, factors),
            TableSpec("item", num_items, width, factors),
            TableSpec("user_bias", num_users, 4, zeros),
            TableSpec("item_bias", num_items, 4, zeros),
        ]
        self.export_groups = {"user": ("user", "user_bias"), "item": ("item", "item_bias")}
        self.sparse = EmbeddingBagCollection(tables=[table_config(t) for t in self.tables], device=device)
        self.mean = nn.Parameter(torch.tensor([float(global_mean)], device=device if device.type != "meta" else "cpu"))

    @staticmethod
    def features(user: torch.Tensor, item: torch.Tensor) -> KeyedJaggedTensor:
        """The KJT this model reads for rating pairs ``user`` [B], ``item`` [B]."""
        return ids_to_kjt({"user": user, "item": item, "user_bias": user, "item_bias": item})

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions [B] and each rating's L2 term [B]."""
        pooled = self.sparse(kjt)
        d = self.dim
        u, i = pooled["user"][:, :d], pooled["item"][:, :d]  # [B, dim]
        bu, bi = pooled["user_bias"][:, 0], pooled["item_bias"][:, 0]  # [B]
        pred = self.mean + bu + bi + (u * i).sum(1)
        reg = self.cfg.l2 * (u.square().sum(1) + i.square().sum(1)) + self.cfg.bias_l2 * (bu.square() + bi.square())
        return pred, reg

    def loss(self, pred: torch.Tensor, reg: torch.Tensor, rating: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Mean of the per-rating objective over this worker's batch (padding rows weigh 0)."""
        return (weight * ((pred - rating).square() + reg)).sum() / weight.numel()

    def export(self, name: str, blocks: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Columns of an exported block of users or items: ``vector`` [R, dim], ``bias`` [R]."""
        return {"vector": blocks[name][:, : self.dim].numpy(), "bias": blocks[f"{name}_bias"][:, 0].numpy()}

    def export_meta(self) -> dict[str, float]:
        return {"global_mean": float(self.mean.detach().cpu()[0])}
