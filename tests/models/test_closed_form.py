"""Closed forms: EASE against its definition, the ∞-AE kernel against a finite-width Monte-Carlo
NTK, ∞-AE's kernel regression against a direct solve, and the support sampling of the memory plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from distrec.data.user_items import UserItems
from distrec.models.closed_form import (
    EASE,
    EASEConfig,
    InfAEConfig,
    InfiniteAE,
    PopRec,
    PopRecConfig,
    gram_block,
    infae_bytes,
    max_support,
)
from distrec.models.ntk import ntk
from distrec.models.registry import build_closed_form


def _random_items(seed: int, users: int = 30, items: int = 8, density: float = 0.4) -> UserItems:
    x = np.random.default_rng(seed).random((users, items)) < density
    u, i = np.nonzero(x)
    return UserItems.from_pairs(u, i, num_users=users, num_items=items)


# -- EASE -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ease_matches_its_closed_form(dtype):
    train = _random_items(0)
    lam = 2.0
    b = EASE(EASEConfig(lambdas=[lam], dtype=dtype), train).solve(lam).double().numpy()
    x = train.dense(np.arange(train.num_users), dtype=torch.float64).numpy()
    g = x.T @ x
    p = np.linalg.inv(g + lam * np.eye(len(g)))
    expected = np.eye(len(g)) - p / np.diag(p)  # B = I - P diag(1/diag(P))  (Steck 2019, eq. 8)
    assert np.diag(b).tolist() == [0.0] * len(g)  # an item never predicts itself
    assert b == pytest.approx(expected, abs=1e-5 if dtype == "float32" else 1e-10)
    # and it is the constrained ridge regression's optimum: the gradient of ||X - XB||² + λ||B||²
    # vanishes off the diagonal (the diagonal carries the Lagrange multipliers of diag(B) = 0)
    gradient = (g + lam * np.eye(len(g))) @ b - g
    off = ~np.eye(len(g), dtype=bool)
    assert np.abs(gradient[off]).max() < (1e-3 if dtype == "float32" else 1e-9)


def test_ease_scores_are_context_rows_times_b():
    train = _random_items(1)
    model = EASE(EASEConfig(lambdas=[1.0]), train)
    b = model.solve(1.0)
    users = torch.tensor([3, 0])
    assert torch.allclose(model.scorer(b, train)(users), train.dense(users.numpy()) @ b.float())


def test_ease_on_rows_is_ease_on_those_users():
    train = _random_items(2)
    rows = train.dense(np.arange(train.num_users))
    on_rows, on_train = EASE.on_rows(EASEConfig(lambdas=[2.0]), rows), EASE(EASEConfig(lambdas=[2.0]), train)
    torch.testing.assert_close(on_rows.solve(2.0), on_train.solve(2.0))


# -- ∞-AE: the kernel -------------------------------------------------------------------------
def _empirical_ntk(x: torch.Tensor, *, width: int, depth: int, w_var: float, b_var: float, gen: torch.Generator) -> torch.Tensor:
    """⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩ of one random finite network in the NTK parameterisation
    (layer: √(w/fan_in)·W h + √b·b, W and b standard normal), scalar output."""
    dims = [x.shape[1]] + [width] * depth + [1]
    params = {}
    for i in range(depth + 1):
        params[f"W{i}"] = torch.randn(dims[i + 1], dims[i], generator=gen, dtype=torch.float64)
        params[f"b{i}"] = torch.randn(dims[i + 1], generator=gen, dtype=torch.float64)

    def f(p, row):
        h = row
        for i in range(depth + 1):
            h = math.sqrt(w_var / dims[i]) * (p[f"W{i}"] @ h) + math.sqrt(b_var) * p[f"b{i}"]
            h = torch.relu(h) if i < depth else h
        return h.sum()

    grads = vmap(grad(f), in_dims=(None, 0))(params, x)
    jac = torch.cat([g.reshape(len(x), -1) for g in grads.values()], dim=1)  # [n, params]
    return jac @ jac.T


# Tolerance: the largest relative error over all entries of a 6×6 kernel. A width-m network's
# NTK deviates from the limit by O(1/√m) per draw (and a small O(1/m) bias that grows with
# depth); averaging 16 draws, the observed maximum over seeds was 2.4% (depth 1, m = 4096) and
# 3.3% (depth 2, m = 1024). Plausible mistakes are far outside it: the NNGP instead of the NTK
# is 50% off, W_std² = 1.5 43%, one layer too many 114%, b_std² = 0.11 1000% (on the empty user).
@pytest.mark.parametrize(
    "depth, w_var, b_var, width, tolerance",
    [(1, 2.0, 0.01, 4096, 0.06), (2, 1.5, 0.5, 1024, 0.08)],
    ids=["paper-defaults", "depth2"],
)
def test_ntk_matches_monte_carlo_estimate(depth, w_var, b_var, width, tolerance):
    torch.manual_seed(0)
    x = (torch.rand(6, 12, dtype=torch.float64) < 0.4).double()
    x[0] = 0.0  # a user without interactions: only the biases reach the output
    exact = ntk(x, x, depth=depth, w_var=w_var, b_var=b_var)
    gen = torch.Generator().manual_seed(0)
    draws = 16
    estimate = sum(_empirical_ntk(x, width=width, depth=depth, w_var=w_var, b_var=b_var, gen=gen) for _ in range(draws)) / draws
    assert ((estimate - exact).abs() / exact.abs()).max() < tolerance
    assert torch.allclose(exact, exact.T) and torch.linalg.eigvalsh(exact).min() > 0


def test_ntk_closed_form_for_one_hidden_layer():
    # depth 1, x = x': θ = 0, so Σ̃ = Σ₁/2, Σ̇ = 1/2 and Θ = (w Σ₁/2 + b) + w Σ₁/2
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    sigma1 = 2.0 * 3 / 4 + 0.01
    assert ntk(x, x).item() == pytest.approx((2.0 * sigma1 / 2 + 0.01) + 2.0 * sigma1 / 2)


# -- ∞-AE: the regression -----------------------------------------------------------------------
def test_infae_is_kernel_ridge_regression():
    train = _random_items(2, users=25, items=10)
    lam = 5.0
    model = InfiniteAE(InfAEConfig(lambdas=[lam], dtype="float64"), train)
    alpha = model.solve(lam)
    x = train.dense(model.support, dtype=torch.float64)
    k = ntk(x, x)
    expected_alpha = torch.linalg.solve(k + lam * k.trace() / len(k) * torch.eye(len(k), dtype=torch.float64), x)
    assert torch.allclose(alpha, expected_alpha, atol=1e-10)
    context = _random_items(3, users=25, items=10)
    users = torch.tensor([4, 1, 7])
    scores = model.scorer(alpha, context)(users)
    expected = (ntk(context.dense(users.numpy(), dtype=torch.float64), x) @ expected_alpha).float()
    assert torch.allclose(scores, expected, atol=1e-6)


def test_infae_samples_the_support_that_fits_the_budget():
    train = _random_items(4, users=200, items=50)
    budget_gb = infae_bytes(60, 50, "float32") / 2**30  # room for 60 support users
    assert max_support(50, infae_bytes(60, 50, "float32"), "float32") == 60
    model = InfiniteAE(InfAEConfig(memory_gb=budget_gb), train)
    assert len(model.support) == 60 and len(set(model.support.tolist())) == 60
    assert np.all(train.counts()[model.support] > 0)
    again = InfiniteAE(InfAEConfig(support_users=40), train)
    assert len(again.support) == 40
    assert np.array_equal(again.support, InfiniteAE(InfAEConfig(support_users=40), train).support)  # seeded


def test_poprec_ranks_by_training_counts():
    train = _random_items(5)
    model = PopRec(PopRecConfig(), train)
    scores = model.scorer(model.solve(None), train)(torch.tensor([0, 1]))
    assert scores.shape == (2, train.num_items) and scores[0].tolist() == train.item_counts().tolist()


# -- devices (model.device) ---------------------------------------------------------------------
def test_gram_block_dense_path_equals_the_sparse_one():
    """EASE's Gram matrix on a GPU densifies each block (one GEMM); the CPU multiplies the sparse
    block. Both on the CPU here: the same XᵀX."""
    train = _random_items(6, users=40, items=12)
    x = train.sparse(np.arange(train.num_users))
    torch.testing.assert_close(gram_block(x, dense=True), gram_block(x, dense=False), rtol=0, atol=0)
    dense = train.dense(np.arange(train.num_users))
    torch.testing.assert_close(gram_block(x, dense=False), dense.T @ dense, rtol=0, atol=0)


@pytest.mark.gpu
def test_ease_infae_and_poprec_on_cuda_match_cpu():
    train, context = _random_items(7, users=300, items=40), _random_items(8, users=300, items=40)
    users = torch.arange(0, 300, 7)
    cuda = torch.device("cuda")
    for cfg, lam in (
        (EASEConfig(lambdas=[3.0]), 3.0),
        (InfAEConfig(lambdas=[5.0], dtype="float64"), 5.0),
        (PopRecConfig(), None),
    ):
        on_cpu, on_gpu = build_closed_form(cfg, train), build_closed_form(cfg, train, device=cuda)
        weights_cpu, weights_gpu = on_cpu.solve(lam), on_gpu.solve(lam)
        assert weights_gpu.device.type == "cuda"
        torch.testing.assert_close(weights_gpu.cpu(), weights_cpu, rtol=1e-5, atol=1e-6)
        scores_gpu = on_gpu.scorer(weights_gpu, context)(users)
        assert scores_gpu.device.type == "cuda"
        torch.testing.assert_close(scores_gpu.cpu(), on_cpu.scorer(weights_cpu, context)(users), rtol=1e-4, atol=1e-5)
