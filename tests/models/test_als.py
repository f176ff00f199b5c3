"""ALS's batched solves against dense numpy references of the same normal equations (explicit
ALS-WR with biases, implicit iALS without the Gramian trick), conjugate gradients against the
exact solve, and the Gibbs draws against closed-form posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distrec.models.als import ALSConfig, Rows, draw_hyper, draw_precision, hashed_normals, row_batches, solve_rows, wishart
from tests.helpers import needs_kernels


def _ratings(users: int = 40, items: int = 25, per_user: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs with ratings 1..5; one user with none, one with a single rating."""
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(2, users) for i in rng.choice(items, size=rng.integers(2, per_user), replace=False)]
    pairs.append((1, 3))
    user, item = (np.array(c, dtype=np.int64) for c in zip(*pairs))
    return user, item, rng.integers(1, 6, size=len(user)).astype(np.float32)


def _solve(cfg: ALSConfig, user, item, rating, table: torch.Tensor, *, users: int, budget: int = 300, **kw) -> torch.Tensor:
    rows = Rows.from_pairs(user, item, rating, rows=users)
    out = 0.01 * torch.ones(users, table.shape[1])
    solve_rows(cfg, rows, table, out, batches=row_batches(rows, width=table.shape[1], budget=budget), **kw)
    return out


@pytest.mark.parametrize("biases", [True, False])
def test_explicit_rows_match_a_dense_numpy_solve(biases):
    cfg = ALSConfig(objective="explicit", dim=4, l2=0.3, bias_l2=0.05, biases=biases)
    user, item, rating = _ratings()
    users, items, mean = 40, 25, float(rating.mean())
    table = torch.randn(items, cfg.width, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    counts = np.bincount(user, minlength=users)
    got = _solve(cfg, user, item, rating, table, users=users, scale=torch.from_numpy(np.maximum(counts, 1)).float(), mean=mean)

    y = table.double().numpy()
    lam = np.array([0.3] * 4 + ([0.05] if biases else []))
    for u in range(users):
        mine = user == u
        feats = y[item[mine]].copy()
        target = rating[mine] - mean
        if biases:
            target = target - feats[:, 4]
            feats[:, 4] = 1.0
        a = feats.T @ feats + max(mine.sum(), 1) * np.diag(lam)  # ALS-WR: λ·n_u
        np.testing.assert_allclose(
            got[u].numpy(), np.linalg.solve(a, feats.T @ target), rtol=1e-4, atol=1e-5, err_msg=f"user {u}"
        )


@pytest.mark.parametrize("confidence", ["binary", "rating"])
@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_implicit_rows_match_a_dense_solve_over_every_item(confidence, exponent):
    """The Gramian trick (YᵀY + observed corrections) against Yᵀ C_u Y summed over all items."""
    cfg = ALSConfig(
        objective="implicit", dim=5, l2=0.7, alpha=3.0, confidence=confidence, solver="cholesky", reg_exponent=exponent
    )
    user, item, rating = _ratings(seed=2)
    users, items = 40, 25
    table = 0.3 * torch.randn(items, 5, generator=torch.Generator().manual_seed(3))
    dense = np.zeros((users, items))
    dense[user, item] = rating
    conf = 1.0 + 3.0 * (dense if confidence == "rating" else (dense > 0))
    weight = torch.from_numpy(conf.sum(1)).float()  # W_u = Σ_i c_ui over all items
    gram = table.T @ table
    got = _solve(cfg, user, item, rating, table, users=users, scale=weight.pow(exponent), shared=gram)

    y = table.double().numpy()
    for u in range(users):
        a = y.T @ (conf[u][:, None] * y) + 0.7 * conf[u].sum() ** exponent * np.eye(5)
        b = y.T @ (conf[u] * (dense[u] > 0))
        np.testing.assert_allclose(got[u].numpy(), np.linalg.solve(a, b), rtol=1e-4, atol=1e-5, err_msg=f"user {u}")


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_kernels), False], ids=["kernel", "torch"])
def test_conjugate_gradient_reaches_the_exact_solve_and_improves_from_a_warm_start(native):
    exact_cfg = ALSConfig(objective="implicit", dim=6, l2=0.5, alpha=5.0, solver="cholesky")
    user, item, rating = _ratings(seed=4)
    table = 0.3 * torch.randn(25, 6, generator=torch.Generator().manual_seed(5))
    kw = {"users": 40, "scale": torch.ones(40), "shared": table.T @ table, "native": native}
    exact = _solve(exact_cfg, user, item, rating, table, **kw)
    many = _solve(
        ALSConfig(objective="implicit", dim=6, l2=0.5, alpha=5.0, solver="cg", cg_steps=12), user, item, rating, table, **kw
    )
    torch.testing.assert_close(many, exact, rtol=1e-3, atol=1e-4)  # k steps solve a k-dimensional system
    few = _solve(
        ALSConfig(objective="implicit", dim=6, l2=0.5, alpha=5.0, solver="cg", cg_steps=2), user, item, rating, table, **kw
    )
    start = 0.01 * torch.ones(40, 6)
    assert ((few - exact).norm(dim=1) < (start - exact).norm(dim=1) + 1e-7).all()


@needs_kernels
@pytest.mark.parametrize("confidence", ["binary", "rating"])
@pytest.mark.parametrize("steps", [1, 3])
def test_the_cg_kernel_takes_the_same_steps_as_the_batched_torch_cg(confidence, steps):
    """distrec's C++ row loop and the batched torch ops: the same iterates from the same warm
    start (rows of every length, one without ratings, per-row λ scales) and the same objective."""
    cfg = ALSConfig(objective="implicit", dim=16, l2=0.4, alpha=4.0, confidence=confidence, cg_steps=steps)
    user, item, rating = _ratings(users=60, items=50, per_user=30, seed=6)
    rows = Rows.from_pairs(user, item, rating, rows=60)
    gen = torch.Generator().manual_seed(7)
    table = 0.2 * torch.randn(50, 16, generator=gen)
    start = 0.1 * torch.randn(60, 16, generator=gen)
    kw = {
        "batches": row_batches(rows, width=16, budget=2000),
        "scale": 1 + torch.rand(60, generator=gen),
        "shared": table.T @ table,
    }
    native, batched = start.clone(), start.clone()
    loss_native = solve_rows(cfg, rows, table, native, native=True, **kw)
    loss_batched = solve_rows(cfg, rows, table, batched, native=False, **kw)
    torch.testing.assert_close(native, batched, rtol=1e-4, atol=1e-5)
    assert loss_native == pytest.approx(loss_batched, rel=1e-4)


@needs_kernels
def test_the_cg_kernel_refuses_a_column_outside_the_table():
    cfg = ALSConfig(objective="implicit", dim=4, solver="cg")
    rows = Rows.from_pairs(np.array([0, 1]), np.array([2, 9]), np.ones(2, np.float32), rows=2)
    table = torch.ones(5, 4)
    with pytest.raises(RuntimeError, match=r"column index out of range \[0, 5\)"):
        solve_rows(cfg, rows, table, torch.zeros(2, 4), batches=[], scale=torch.ones(2), shared=table.T @ table)


def test_batches_cover_every_row_once_within_the_budget():
    user, item, rating = _ratings(users=200, per_user=20)
    rows = Rows.from_pairs(user, item, rating, rows=200)
    batches = row_batches(rows, width=8, budget=500)
    ids = torch.cat(batches)
    assert sorted(ids.tolist()) == list(range(200))
    counts = rows.counts()
    for b in batches:
        assert len(b) == 1 or len(b) * max(int(counts[b].max()) * 8, 64) <= 500


def test_gibbs_row_draws_have_the_closed_form_posterior():
    """Fixed prior N(μ, Λ⁻¹), fixed item rows, noise precision τ: the conditional posterior of a
    row is N(A⁻¹b, A⁻¹) with A = Λ + τ Σ y yᵀ, b = Λμ + τ Σ y r. One row drawn 20,000 times
    (20,000 rows with the same ratings); the sample mean is within 5 standard errors."""
    cfg = ALSConfig(objective="explicit", dim=2, biases=True, bayesian=True, l2=0.0)
    n, tau, mean = 20_000, 2.0, 3.5
    table = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.8, -0.3], [-0.6, 0.4, 0.2]])
    ratings = np.array([4.0, 2.0, 5.0], dtype=np.float32)
    user = np.repeat(np.arange(n), 3)
    item = np.tile(np.arange(3), n)
    rows = Rows.from_pairs(user, item, np.tile(ratings, n), rows=n)
    lam = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.5, 0.1], [0.0, 0.1, 4.0]])
    mu = torch.tensor([0.2, -0.1, 0.05])
    out = torch.zeros(n, 3)
    noise = hashed_normals(np.arange(n), 3, (0, 2, 1, 0))
    solve_rows(cfg, rows, table, out, batches=row_batches(rows, width=3, budget=1 << 16), scale=torch.zeros(n), mean=mean,
               shared=lam, shared_rhs=lam @ mu, precision=tau, noise=noise)  # fmt: skip

    feats = table.double().numpy().copy()
    target = ratings - mean - feats[:, 2]
    feats[:, 2] = 1.0
    a = lam.double().numpy() + tau * feats.T @ feats
    cov = np.linalg.inv(a)
    post_mean = cov @ (lam.double().numpy() @ mu.double().numpy() + tau * feats.T @ target)
    samples = out.double().numpy()
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(samples.mean(0) - post_mean) < 5 * se), (samples.mean(0), post_mean, se)
    np.testing.assert_allclose(np.cov(samples.T), cov, rtol=0.1, atol=0.05 * np.abs(cov).max())


def test_hyper_parameter_draws_match_the_normal_wishart_posterior():
    """E[Λ] = ν* W* and E[μ] = μ* under BPMF's posterior; 4,000 draws, 5 standard errors."""
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -0.5], [0.7, 0.3], size=(30, 2))
    count, total, outer = float(len(x)), x.sum(0), x.T @ x
    draws = [draw_hyper(count, total, outer, beta0=2.0, rng=rng) for _ in range(4000)]
    mus, lams = np.array([d[0] for d in draws]), np.array([d[1] for d in draws])
    xbar = x.mean(0)
    w = np.linalg.inv(np.eye(2) + (outer - count * np.outer(xbar, xbar)) + (2.0 * count / (2.0 + count)) * np.outer(xbar, xbar))
    expected_lam = (2 + count) * w
    assert np.all(np.abs(lams.mean(0) - expected_lam) < 5 * lams.std(0) / math.sqrt(len(draws)))
    assert np.all(np.abs(mus.mean(0) - count * xbar / (2.0 + count)) < 5 * mus.std(0) / math.sqrt(len(draws)))


def test_wishart_and_precision_draws_have_their_means():
    rng = np.random.default_rng(1)
    scale = np.array([[1.0, 0.4], [0.4, 0.5]])
    draws = np.array([wishart(scale, 6.0, rng) for _ in range(5000)])
    assert np.all(np.abs(draws.mean(0) - 6.0 * scale) < 5 * draws.std(0) / math.sqrt(5000))
    taus = np.array([draw_precision(sse=40.0, count=100.0, rng=rng) for _ in range(5000)])
    assert abs(taus.mean() - (1 + 50) / (1 + 20)) < 5 * taus.std() / math.sqrt(5000)


def test_hashed_normals_depend_only_on_key_row_and_column():
    many = hashed_normals(np.arange(50_000), 8, (0, 1, 2, 3))
    assert abs(float(many.mean())) < 0.01 and abs(float(many.std()) - 1.0) < 0.01
    some = hashed_normals(np.array([7, 49_999, 3]), 8, (0, 1, 2, 3))
    torch.testing.assert_close(some, many[[7, 49_999, 3]], rtol=0, atol=0)  # whoever holds the row draws the same
    other = hashed_normals(np.array([7]), 8, (0, 1, 2, 4))
    assert not torch.allclose(other, many[[7]])


def test_config_refuses_what_the_model_cannot_do():
    with pytest.raises(ValueError, match="implicit has no biases"):
        ALSConfig(objective="implicit", biases=True)
    with pytest.raises(ValueError, match="bayesian"):
        ALSConfig(objective="implicit", bayesian=True)
    with pytest.raises(ValueError, match="Cholesky"):
        ALSConfig(bayesian=True, solver="cg")
    with pytest.raises(ValueError, match="l2 must be positive"):
        ALSConfig(l2=0.0)
    assert ALSConfig(objective="implicit").method == "cg" and ALSConfig().method == "cholesky"
    assert ALSConfig().exponent == 1.0 and ALSConfig(objective="implicit").exponent == 0.0
