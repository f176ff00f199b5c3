"""NeuMF (He et al. 2017, "Neural Collaborative Filtering"): GMF and MLP towers fused.

    φ_GMF = p_u^G ⊙ q_i^G                                   [d_G]
    φ_MLP = MLP([p_u^M ; q_i^M])                             [layers[-1]], ReLU layers
    s(u, i) = hᵀ [φ_GMF ; φ_MLP]                             the fusion layer (no bias)
    reg     = l2 · Σ |row|²  over the embedding rows a training row touches

Four TorchRec tables (``gmf_user``, ``gmf_item``, ``mlp_user``, ``mlp_item``: the paper keeps
the towers' embeddings separate); the MLP layers and h are dense, DDP-wrapped by DMP. The paper
trains with a pointwise log loss; here the task's loss (BPR or sampled softmax) is applied to
``s``, which is the paper's logit.

Scoring every item: the first MLP layer is split, ``W [p; q] + b = (W_u p + b) + W_i q``, so
the user and item halves are computed once per user and once per item and only the sum, the
ReLU and the later (narrow) layers run per (user, item) pair, in user chunks that bound the
[users, I, width] activations (``PAIR_BUDGET`` floats).

Not done: the paper's optional pre-training (initialising from trained GMF and MLP models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distrec.config import NonNegative, Positive
from distrec.eval.ranking import Scorer
from distrec.models.spec import ModelContext, ModelSpec
from distrec.models.tables import TableSpec, embedding_collection, gaussian_rows, lookup, padded_width

__all__ = ["NeuMFConfig", "NeuMF", "PAIR_BUDGET", "SPECS"]

PAIR_BUDGET = 1 << 24  # floats of [users, items, width] activations while scoring (64 MiB)


@dataclass
class NeuMFConfig:
    name: Literal["neumf"] = "neumf"
    gmf_dim: Positive[int] = 32  # the paper's "predictive factors"
    mlp_dim: Positive[int] = 32  # each MLP embedding; the tower's input is 2 · mlp_dim
    layers: list[Positive[int]] = field(default_factory=lambda: [32, 16])  # MLP hidden widths after the input
    init_std: NonNegative[float] = 0.01  # embeddings (the paper: N(0, 0.01²))
    l2: NonNegative[float] = 0.0  # on the embedding rows a training row touches

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("model.layers: give at least one MLP layer width")


class NeuMF(nn.Module):
    def __init__(self, cfg: NeuMFConfig, *, num_users: int, num_items: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        gmf, mlp = (
            (padded_width(cfg.gmf_dim), gaussian_rows(cfg.gmf_dim, cfg.init_std)),
            (padded_width(cfg.mlp_dim), gaussian_rows(cfg.mlp_dim, cfg.init_std)),
        )
        self.tables = [
            TableSpec("gmf_user", num_users, *gmf),
            TableSpec("gmf_item", num_items, *gmf),
            TableSpec("mlp_user", num_users, *mlp),
            TableSpec("mlp_item", num_items, *mlp),
        ]
        self.keys = [t.name for t in self.tables]
        self.export_groups = {"user": ("gmf_user", "mlp_user"), "item": ("gmf_item", "mlp_item")}
        self.sparse = embedding_collection(self.tables, device)
        dense = device if device.type != "meta" else torch.device("cpu")  # DMP leaves dense modules as built
        widths = [2 * cfg.mlp_dim, *cfg.layers]
        self.tower = nn.ModuleList(nn.Linear(a, b, device=dense) for a, b in zip(widths, widths[1:]))
        self.fuse = nn.Linear(cfg.gmf_dim + cfg.layers[-1], 1, bias=False, device=dense)

    def _rows(self, user: torch.Tensor | None, item: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Embedding rows (padding columns cut) of ``user`` [B] and ``item`` [N], either may be None."""
        ids = {
            **({"gmf_user": user, "mlp_user": user} if user is not None else {}),
            **({"gmf_item": item, "mlp_item": item} if item is not None else {}),
        }
        rows = lookup(self.sparse, self.keys, ids)
        return {k: v[:, : self.cfg.gmf_dim if k.startswith("gmf") else self.cfg.mlp_dim] for k, v in rows.items()}

    def _head(self, gmf: torch.Tensor, user_half: torch.Tensor, item_half: torch.Tensor) -> torch.Tensor:
        """Scores [..., C] from ``gmf`` [..., C, d_G] and the first layer's halves, broadcast to [..., C, h1]."""
        x = F.relu(user_half + item_half)
        for layer in self.tower[1:]:
            x = F.relu(layer(x))
        h_gmf, h_mlp = self.fuse.weight[0, : self.cfg.gmf_dim], self.fuse.weight[0, self.cfg.gmf_dim :]
        return gmf @ h_gmf + x @ h_mlp

    def _first_layer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = self.tower[0]
        return first.weight[:, : self.cfg.mlp_dim], first.weight[:, self.cfg.mlp_dim :], first.bias  # W_u, W_i [h1, m], b [h1]

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores [B, C] of ``items`` [B, C] for ``user`` [B], and the L2 penalty per row [B]."""
        b, c = items.shape
        r = self._rows(user, items.reshape(-1))
        gu, gi = r["gmf_user"], r["gmf_item"].reshape(b, c, -1)  # [B, d_G], [B, C, d_G]
        mu, mi = r["mlp_user"], r["mlp_item"].reshape(b, c, -1)  # [B, m], [B, C, m]
        w_u, w_i, bias = self._first_layer()
        scores = self._head(gu[:, None, :] * gi, (mu @ w_u.T + bias)[:, None, :], mi @ w_i.T)
        reg = self.cfg.l2 * (gu.square().sum(1) + mu.square().sum(1) + gi.square().sum((1, 2)) + mi.square().sum((1, 2)))
        return scores, reg

    def scorer(self) -> Scorer:
        """``users`` [B] → scores of every item [B, I]. Collective (see distrec/train/ranking_task.py)."""
        w_u, w_i, bias = self._first_layer()
        items = self._rows(None, torch.arange(self.num_items))
        gi, item_half = items["gmf_item"], items["mlp_item"] @ w_i.T  # [I, d_G], [I, h1]
        chunk = max(1, PAIR_BUDGET // (self.num_items * max(self.cfg.layers)))

        def score(users: torch.Tensor) -> torch.Tensor:
            r = self._rows(users, None)
            user_half = r["mlp_user"] @ w_u.T + bias  # [B, h1]
            out = []
            for s in range(0, len(users), chunk):
                gmf = r["gmf_user"][s : s + chunk, None, :] * gi  # [b, I, d_G]
                out.append(self._head(gmf, user_half[s : s + chunk, None, :], item_half))
            return torch.cat(out)

        return score

    def export(self, name: str, blocks: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """An exported block of users or items: ``vector`` = [GMF row ; MLP row] [R, d_G + m]. Scores
        need the dense tower too (in the checkpoint), so these are not dot-product factors."""
        gmf, mlp = blocks[f"gmf_{name}"][:, : self.cfg.gmf_dim], blocks[f"mlp_{name}"][:, : self.cfg.mlp_dim]
        return {"vector": torch.cat([gmf, mlp], 1).numpy()}

    def export_meta(self) -> dict[str, float]:
        return {"gmf_dim": self.cfg.gmf_dim, "mlp_dim": self.cfg.mlp_dim}


def build(cfg: NeuMFConfig, ctx: ModelContext, device: torch.device) -> NeuMF:
    return NeuMF(cfg, num_users=ctx.num_users, num_items=ctx.num_items, device=device)


SPECS = (ModelSpec(name="neumf", config=NeuMFConfig, build=build, task="ranking"),)
