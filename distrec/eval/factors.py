"""Scores from factor tables: ``s(u, i) = p_u · q_i + b_i``, for models that export them.

Matrix factorisation, MF-BPR, LightGCN and two-tower models all rank by a dot product plus an
item bias (a user bias and a global mean do not change a user's ranking). Reading the tables a
training run exported (``<output_dir>/embeddings/{user,item}``) lets any such run be evaluated
with ``evaluate_ranking`` after the fact, on one process, whatever its sharding was.
"""

from __future__ import annotations

import torch

from distrec.eval.ranking import Scorer
from distrec.storage import join
from distrec.storage.embeddings import EmbeddingTable, read_embeddings

__all__ = ["factor_scorer", "exported_scorer"]


def factor_scorer(user: EmbeddingTable, item: EmbeddingTable) -> Scorer:
    """``users`` [B] → ``P[users] Qᵀ + b`` [B, I] (``b`` the item table's ``bias`` column, if any)."""
    p = torch.from_numpy(user.vector)  # [U, d], rows in index order
    q_t = torch.from_numpy(item.vector).T.contiguous()  # [d, I]
    bias = torch.from_numpy(item.columns["bias"]).float() if "bias" in item.columns else None  # [I]
    if bias is None:
        return lambda users: p[users] @ q_t
    return lambda users: torch.addmm(bias.unsqueeze(0), p[users], q_t)


def exported_scorer(output_dir: str) -> Scorer:
    """The scorer of the ``user`` and ``item`` tables a training run exported."""
    return factor_scorer(
        read_embeddings(join(output_dir, "embeddings", "user")), read_embeddings(join(output_dir, "embeddings", "item"))
    )
