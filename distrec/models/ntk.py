"""The neural tangent kernel of an infinitely wide fully connected ReLU network, in torch.

The network is ``depth`` × (Dense → ReLU) → Dense in the NTK parameterisation (Jacot et al.
2018): a layer computes ``W_std/√fan_in · W h + b_std · b`` with W, b ~ N(0, 1). That is the
∞-AE network (Sachdeva et al., NeurIPS 2022), built there with neural-tangents'
``stax.serial(Flatten, [Dense(W_std=√2, b_std=0.1), Relu] × depth, Dense)``; the recursion
below is the one its ``kernel_fn(..., get="ntk")`` evaluates. With Σ the NNGP kernel and Θ the
NTK, starting from the inputs (d features):

    Σ₁(x, x') = w·(x·x')/d + b,                              Θ₁ = Σ₁        (w = W_std², b = b_std²)
    after ReLU (arc-cosine kernel, θ = angle between x and x' under Σ):
        Σ̃ = √(Σ(x,x) Σ(x',x')) · (sin θ + (π − θ) cos θ) / 2π,   Σ̇ = (π − θ) / 2π
    next Dense:  Σ' = w·Σ̃ + b,   Θ' = Σ' + w·Σ̇·Θ

The output layer's width does not change the kernel (outputs are independent), so this scalar
kernel serves every item column of the autoencoder. It is differentiable in its inputs
(Distill-CF learns the support through it); callers form it in row blocks, so its few
out-of-place temporaries are [block, n]. ``x1`` may be a sparse CSR tensor (users' 0/1 rows):
the inner products then cost nnz × n2 instead of n1 × d × n2.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ntk"]


def ntk(x1: torch.Tensor, x2: torch.Tensor, *, depth: int = 1, w_var: float = 2.0, b_var: float = 0.01) -> torch.Tensor:
    """Θ(x1, x2) [n1, n2] for inputs ``x1`` [n1, d] and ``x2`` [n2, d] (same dtype and device)."""
    d = x1.shape[1]
    nngp = (x1 @ x2.T) * (w_var / d) + b_var  # Σ₁ [n1, n2]
    var1 = _squared_norms(x1) * (w_var / d) + b_var  # Σ₁(x, x) [n1]
    var2 = (x2 * x2).sum(1) * (w_var / d) + b_var  # [n2]
    theta_k = nngp
    for _ in range(depth):
        # θ from (cos, sin) · √(Σ(x,x) Σ(x',x')) by atan2, as neural-tangents does: no division, and
        # the gradient stays finite where θ = 0 (x = x'), which arccos's does not
        sin_norms = _safe_sqrt(torch.outer(var1, var2) - nngp * nngp)  # √(Σ(x,x) Σ(x',x')) · sin θ
        angle = torch.atan2(sin_norms, nngp)
        theta_k = theta_k * ((math.pi - angle) / (2 * math.pi))  # Θ · Σ̇
        nngp = (sin_norms + (math.pi - angle) * nngp) * (w_var / (2 * math.pi)) + b_var  # next Dense: Σ' = w Σ̃ + b
        var1, var2 = var1 * (w_var / 2) + b_var, var2 * (w_var / 2) + b_var  # on the diagonal θ = 0: Σ̃ = Σ/2
        theta_k = theta_k * w_var + nngp  # Θ' = Σ' + w Σ̇ Θ
    return theta_k


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """|x_i|² per row [n] of a dense or sparse CSR ``x`` [n, d]."""
    if x.layout != torch.sparse_csr:
        return (x * x).sum(1)
    rows = torch.repeat_interleave(
        torch.arange(x.shape[0], device=x.device), x.crow_indices().diff(), output_size=x.values().numel()
    )
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, rows, x.values().square())


def _safe_sqrt(x: torch.Tensor, tol: float = 1e-30) -> torch.Tensor:
    """√max(x, tol): rounding can make Σ(x,x)Σ(x',x') − Σ(x,x')² slightly negative, and √ has no
    finite gradient at 0; below ``tol`` the gradient is 0 (neural-tangents' ``_sqrt``)."""
    return x.clamp(min=tol).sqrt()
