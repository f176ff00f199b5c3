"""Matrix factorisation for top-k recommendation from implicit feedback (MF-BPR; Rendle et al. 2009).

    s(u, i) = p_u · q_i + b_i
    reg     = l2 · (|p_u|² + Σ_c |q_c|²)    over the rows a training row touches (user, positive, negatives)

The item bias ``b_i`` (``item_bias: true``, the default) learns popularity directly, which the
factors otherwise have to encode in their norms; it is the item table's column ``dim`` (a
column the table pads to anyway when ``dim`` is not a multiple of 4), exported as the item
table's ``bias`` column, which ``distrec/eval/factors.py`` adds to the dot product.

The loss on the candidate scores (BPR or sampled softmax) is the task's (distrec/train/
ranking_task.py); the model gives scores and its penalty. ``user`` and ``item`` are TorchRec
tables, sharded by the planner; scoring every item for a block of users is one lookup of the
block's users and a matmul with the item table, which each worker gathers once per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from distrec.config import NonNegative, Positive
from distrec.eval.ranking import Scorer
from distrec.models.spec import ModelContext, ModelSpec
from distrec.models.tables import TableSpec, embedding_collection, gaussian_rows, lookup, padded_width

__all__ = ["MFBPRConfig", "MFBPR", "SPECS"]


@dataclass
class MFBPRConfig:
    name: Literal["mf_bpr"] = "mf_bpr"
    dim: Positive[int] = 64
    init_std: NonNegative[float] = 0.1
    l2: NonNegative[float] = 0.0  # on the factors of the rows a training row touches
    item_bias: bool = True


class MFBPR(nn.Module):
    def __init__(self, cfg: MFBPRConfig, *, num_users: int, num_items: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        init = gaussian_rows(cfg.dim, cfg.init_std)  # the bias column starts at 0
        self.tables = [
            TableSpec("user", num_users, padded_width(cfg.dim), init),
            TableSpec("item", num_items, padded_width(cfg.dim + cfg.item_bias), init),
        ]
        self.keys = [t.name for t in self.tables]
        self.export_groups = {"user": ("user",), "item": ("item",)}
        self.sparse = embedding_collection(self.tables, device)

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores [B, C] of ``items`` [B, C] for ``user`` [B], and the L2 penalty per row [B]."""
        rows = lookup(self.sparse, self.keys, {"user": user, "item": items.reshape(-1)})
        d = self.cfg.dim
        p = rows["user"][:, :d]  # [B, d]
        q = rows["item"][:, :d].reshape(*items.shape, d)  # [B, C, d]
        scores = torch.einsum("bd,bcd->bc", p, q)
        if self.cfg.item_bias:
            scores = scores + rows["item"][:, d].reshape(items.shape)
        reg = self.cfg.l2 * (p.square().sum(1) + q.square().sum((1, 2)))
        return scores, reg

    def scorer(self) -> Scorer:
        """``users`` [B] → scores of every item [B, I]. Collective (see distrec/train/ranking_task.py)."""
        d = self.cfg.dim
        item = lookup(self.sparse, self.keys, {"item": torch.arange(self.num_items)})["item"]
        q_t = item[:, :d].T.contiguous()  # [d, I]
        bias = item[:, d] if self.cfg.item_bias else torch.zeros(self.num_items)  # [I]
        return lambda users: torch.addmm(bias[None, :], lookup(self.sparse, self.keys, {"user": users})["user"][:, :d], q_t)

    def export(self, name: str, blocks: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """An exported block of users or items: ``vector`` [R, dim], and the items' ``bias`` [R]
        (scores are ``vector_u · vector_i + bias_i``)."""
        out = {"vector": blocks[name][:, : self.cfg.dim].numpy()}
        if name == "item" and self.cfg.item_bias:
            out["bias"] = blocks[name][:, self.cfg.dim].numpy()
        return out

    def export_meta(self) -> dict[str, float]:
        return {"l2": self.cfg.l2}  # for folding in new users (distrec/serve)


def build(cfg: MFBPRConfig, ctx: ModelContext, device: torch.device) -> MFBPR:
    return MFBPR(cfg, num_users=ctx.num_users, num_items=ctx.num_items, device=device)


SPECS = (ModelSpec(name="mf_bpr", config=MFBPRConfig, build=build, task="ranking"),)
