"""Distill-CF's loss for one step: ∞-AE kernel regression from the synthetic users to a batch of
real users, softmax cross-entropy against their rows, plus the cardinality regulariser.

    K_ss = Θ(X̃, X̃) [n, n],  K_ts = Θ(X_t, X̃) [B, n]
    P    = K_ts (K_ss + λ·tr(K_ss)/n·I)⁻¹ X̃                       [B, I]   (∞-AE's solve, see
                                                                   distrec/models/closed_form.py)
    loss = mean_u −Σ_i X_t[u, i] · log softmax(P[u])_i  +  c · mean_s Σ_i X̃[s, i] / (nnz / users)

(the paper's code, ``model.py``'s ``loss_fn``). The regression is written here with autograd in
mind (no in-place factorisation, unlike ``InfiniteAE.solve``): n is the synthetic budget, so
the n × n solve is small and is done in float64 for a stable gradient whatever λ.
"""

from __future__ import annotations

import torch

from distrec.models.closed_form import InfAEConfig
from distrec.models.ntk import ntk

__all__ = ["kernel_predictions", "distill_loss"]


def kernel_predictions(support: torch.Tensor, targets: torch.Tensor, *, model: InfAEConfig, lam: float) -> torch.Tensor:
    """∞-AE's scores [B, I] for ``targets`` [B, I] with the synthetic ``support`` [n, I]."""
    kernel = {"depth": model.depth, "w_var": model.w_var, "b_var": model.b_var}
    k_ss = ntk(support, support, **kernel).double()  # [n, n]
    k_ts = ntk(targets.to_sparse_csr(), support, **kernel)  # [B, n]; real users' 0/1 rows are sparse: nnz × n products
    n = k_ss.shape[0]
    ridge = lam * torch.trace(k_ss) / n
    alpha = torch.linalg.solve(k_ss + ridge * torch.eye(n, dtype=k_ss.dtype, device=k_ss.device), support.double())  # [n, I]
    return k_ts @ alpha.to(k_ts.dtype)


def distill_loss(
    support: torch.Tensor,
    targets: torch.Tensor,
    *,
    model: InfAEConfig,
    lam: float,
    real_cardinality: float,
    cardinality_reg: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss and its parts (``ce``, ``cardinality``: mean synthetic row mass over
    ``real_cardinality``, the mean real user's interactions), detached scalars left on the
    device: reading them is a sync the caller makes once per many steps."""
    scores = kernel_predictions(support, targets, model=model, lam=lam)  # [B, I]
    ce = -(torch.log_softmax(scores, dim=-1) * targets).sum(-1).mean()
    cardinality = support.sum(-1).mean() / real_cardinality
    return ce + cardinality_reg * cardinality, {"ce": ce.detach(), "cardinality": cardinality.detach()}
