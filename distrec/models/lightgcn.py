"""LightGCN (He et al. 2020): user and item embeddings smoothed over the user–item graph.

    E⁽⁰⁾ = [users; items]                         the ego embeddings (two TorchRec tables)
    E⁽ᵏ⁺¹⁾ = Â E⁽ᵏ⁾                                Â symmetric-normalised (distrec.models.bipartite)
    E    = mean(E⁽⁰⁾, …, E⁽ᴷ⁾)                      layer combination with α_k = 1/(K+1)
    ŷ(u, i) = e_u · e_i
    loss = mean over (u, i⁺, i⁻) of −log σ(ŷ(u, i⁺) − ŷ(u, i⁻))
           + l2 · ½ (|e⁽⁰⁾_u|² + |e⁽⁰⁾_i⁺|² + |e⁽⁰⁾_i⁻|²)          (the paper's code: L2 on the ego rows)

The model scores candidates and returns the L2 term; the BPR loss, the negative sampling and
the full-ranking evaluation are the ranking task's (distrec/train/ranking_task.py).

**Distributed design.** The ego tables are ordinary TorchRec tables, sharded by the planner
(table-wise or column-wise on CPU) and updated by the fused embedding optimizer. Each step
every worker looks up *all* rows of both tables through the sharded module (one all-to-all:
the tables are what propagation needs, and at ML-1M size E⁽⁰⁾ is 10k × 64 floats), then
propagates with its row block of Â only and all-gathers the blocks after each layer
(``bipartite.propagate``, autograd-aware). Each worker owns about 1/world of Â's non-zeros,
so the sparse matmuls, the dominant cost, are split over the workers; the all-gathers move
N × D floats per layer. Backward, each worker's gradient of E⁽⁰⁾ covers the graph rows it
owns; TorchRec's backward all-to-all sums the workers' gradients onto the table shards
(divided by the world size, like every other model: the gradient of the mean over the
global batch). The graph is built once, when the model is built, from each worker's slice of
the training pairs (the task's ``ModelContext.train``).

Lookups of every row are what a full-graph GCN needs; at a size where E⁽⁰⁾ no longer fits a
worker, propagation would have to gather only the ``K``-hop neighbourhood of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from distrec.config import NonNegative, Positive
from distrec.eval.ranking import Scorer
from distrec.models.bipartite import Graph, build_graph, propagate
from distrec.models.spec import ModelContext, ModelSpec
from distrec.models.tables import TableSpec, embedding_collection, gaussian_rows, lookup, padded_width

__all__ = ["LightGCNConfig", "LightGCN", "SPECS"]


@dataclass
class LightGCNConfig:
    name: Literal["lightgcn"] = "lightgcn"
    dim: Positive[int] = 64
    layers: NonNegative[int] = 3  # K propagation steps; 0 is matrix factorisation with BPR
    init_std: NonNegative[float] = 0.1  # normal init of the ego embeddings (the paper's code: std 0.1)
    l2: NonNegative[float] = 1e-4  # on the ego rows of the batch, as in the paper's code


class LightGCN(nn.Module):
    def __init__(
        self, cfg: LightGCNConfig, *, num_users: int, num_items: int, pairs: tuple[np.ndarray, np.ndarray], device: torch.device
    ) -> None:
        """``pairs``: this worker's training (user, item) pairs [E_r] (each pair on one worker);
        building the graph from them is a collective."""
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.num_users, self.num_items = num_users, num_items
        width, init = padded_width(cfg.dim), gaussian_rows(cfg.dim, cfg.init_std)
        self.tables = [TableSpec("user", num_users, width, init), TableSpec("item", num_items, width, init)]
        self.keys = [t.name for t in self.tables]
        self.export_groups = {"user": ("user",), "item": ("item",)}
        self.sparse = embedding_collection(self.tables, device)
        self.graph: Graph = build_graph(*pairs, num_users=num_users, num_items=num_items)
        self._every_row = {"user": torch.arange(num_users), "item": torch.arange(num_items)}

    def ego(self) -> torch.Tensor:
        """E⁽⁰⁾ [N, dim]: every user row, then every item row. Collective (sharded lookup)."""
        rows = lookup(self.sparse, self.keys, self._every_row)
        return torch.cat([rows["user"][:, : self.dim], rows["item"][:, : self.dim]])

    def propagated(self, ego: torch.Tensor) -> torch.Tensor:
        """E [N, dim]: the mean of E⁽⁰⁾ … E⁽ᴷ⁾. Collective."""
        layer, total = ego, ego
        for _ in range(self.cfg.layers):
            layer = propagate(layer, self.graph)
            total = total + layer
        return total / (self.cfg.layers + 1)

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ŷ(u, i) [B, C] of each user's candidates ``items`` [B, C] (the positive first
        in training), and the L2 term per row [B] on the ego rows involved. Collective."""
        ego = self.ego()
        final = self.propagated(ego)
        nodes = items + self.num_users  # [B, C]
        scores = torch.einsum("bd,bcd->bc", final[user], final[nodes])  # [B, C]
        reg = 0.5 * self.cfg.l2 * (ego[user].square().sum(1) + ego[nodes].square().sum((1, 2)))  # [B]
        return scores, reg

    @torch.no_grad()
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated user [U, dim] and item [I, dim] embeddings; ŷ = users @ itemsᵀ. Collective."""
        final = self.propagated(self.ego())
        return final[: self.num_users], final[self.num_users :]

    def scorer(self) -> Scorer:
        """users [B] → scores of every item [B, I], from one propagation. Collective to build,
        local to call."""
        users, items = self.factors()
        items_t = items.T.contiguous()  # [dim, I]
        return lambda block: users[block] @ items_t

    def export(self, name: str, blocks: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Columns of an exported block: the ego embeddings ``vector`` [R, dim] (E⁽⁰⁾ rows)."""
        return {"vector": blocks[name][:, : self.dim].numpy()}

    def export_meta(self) -> dict[str, float]:
        return {"layers": float(self.cfg.layers)}


def build(cfg: LightGCNConfig, ctx: ModelContext, device: torch.device) -> LightGCN:
    if ctx.train is None:
        raise ValueError("model lightgcn needs the training pairs (ModelContext.train) to build its graph")
    return LightGCN(cfg, num_users=ctx.num_users, num_items=ctx.num_items, pairs=(ctx.train.user, ctx.train.item), device=device)


SPECS = (ModelSpec(name="lightgcn", config=LightGCNConfig, build=build, task="ranking"),)
