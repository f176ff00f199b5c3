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
kernel serves every item column of the autoencoder.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ntk"]


def ntk(x1: torch.Tensor, x2: torch.Tensor, *, depth: int = 1, w_var: float = 2.0, b_var: float = 0.01) -> torch.Tensor:
    """Θ(x1, x2) [n1, n2] for inputs ``x1`` [n1, d] and ``x2`` [n2, d] (same dtype and device)."""
    d = x1.shape[1]
    cross = x1 @ x2.T  # [n1, n2]
    nngp = cross.mul_(w_var / d).add_(b_var)  # Σ₁, in place of the product
    var1 = (x1 * x1).sum(1).mul_(w_var / d).add_(b_var)  # Σ₁(x, x) [n1]
    var2 = (x2 * x2).sum(1).mul_(w_var / d).add_(b_var)  # [n2]
    theta_k = nngp.clone()
    for _ in range(depth):
        norms = torch.outer(var1, var2).sqrt_()  # √(Σ(x,x) Σ(x',x'))
        cos = (nngp / norms).clamp_(-1.0, 1.0)
        angle = torch.arccos(cos)
        sin = (1.0 - cos * cos).clamp_(min=0.0).sqrt_()
        theta_k.mul_((math.pi - angle) / (2 * math.pi))  # Θ · Σ̇
        nngp = norms.mul_(sin + (math.pi - angle) * cos).div_(2 * math.pi)  # Σ̃
        nngp.mul_(w_var).add_(b_var)  # next Dense: Σ'
        var1, var2 = var1 * (w_var / 2) + b_var, var2 * (w_var / 2) + b_var  # on the diagonal θ = 0: Σ̃ = Σ/2
        theta_k.mul_(w_var).add_(nngp)  # Θ' = Σ' + w Σ̇ Θ
    return theta_k
