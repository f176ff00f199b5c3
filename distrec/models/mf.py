"""Biased matrix factorisation for rating prediction (Koren, Bell & Volinsky 2009).

    r̂(u, i) = μ + b_u + b_i + p_u · q_i
    loss     = mean over ratings of (r̂ - r)² + l2 · (|p_u|² + |q_i|²) + bias_l2 · (b_u² + b_i²)

The L2 term is on the rows each rating touches, as in the SGD formulation of the paper.
Each TorchRec table row holds ``[p (dim) | b | 0 0 0]``: the bias rides in the same lookup as
the factors (one kernel call per table), and the padding keeps the width a multiple of 4.
μ is a dense parameter, initialised to the training mean and synchronised by DDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from distrec.models.tables import TableSpec, padded_width, table_config

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
        width = padded_width(cfg.dim + 1)

        def init(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            values = torch.zeros(rows, cols)
            values[:, : cfg.dim] = torch.randn(rows, cfg.dim, generator=gen) * cfg.init_std
            return values

        self.tables = [TableSpec("user", num_users, width, init), TableSpec("item", num_items, width, init)]
        self.sparse = EmbeddingBagCollection(tables=[table_config(t) for t in self.tables], device=device)
        self.mean = nn.Parameter(torch.tensor([float(global_mean)], device=device if device.type != "meta" else "cpu"))

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions [B] and each rating's L2 term [B] for a KJT with features ``user``, ``item``."""
        pooled = self.sparse(kjt)
        u, i = pooled["user"], pooled["item"]  # [B, width]
        d = self.dim
        pred = self.mean + u[:, d] + i[:, d] + (u[:, :d] * i[:, :d]).sum(1)
        reg = self.cfg.l2 * (u[:, :d].square().sum(1) + i[:, :d].square().sum(1))
        reg = reg + self.cfg.bias_l2 * (u[:, d].square() + i[:, d].square())
        return pred, reg

    def loss(self, pred: torch.Tensor, reg: torch.Tensor, rating: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Mean of the per-rating objective over this worker's batch (padding rows weigh 0)."""
        return (weight * ((pred - rating).square() + reg)).sum() / weight.numel()

    def export(self, table: str, rows: torch.Tensor) -> dict[str, np.ndarray]:
        """Columns written for a block of exported rows [R, width]: ``vector`` [R, dim], ``bias`` [R]."""
        return {"vector": rows[:, : self.dim].numpy(), "bias": rows[:, self.dim].numpy()}

    def export_meta(self) -> dict[str, float]:
        return {"global_mean": float(self.mean.detach().cpu()[0])}
