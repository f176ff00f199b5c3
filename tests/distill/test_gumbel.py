"""The multi-Gumbel sampler: its recomputing backward against plain autograd and finite
differences, its range and cardinality, that it does not keep the draws for backward, that its
counter-based noise is Gumbel(0, 1) and independent, and that the fused C++ kernel (CPU, float32)
computes what the torch ops compute."""

from __future__ import annotations

import math

import pytest
import torch

import distrec.distill.gumbel as gumbel
from distrec import kernels
from distrec.distill.gumbel import MultiGumbel, draw_keys, gumbel_noise, multi_gumbel
from tests.helpers import needs_kernels


def _naive(logits: torch.Tensor, *, seed: int, draws: int, tau: float) -> torch.Tensor:
    """The obviously correct version: every draw kept in the autograd graph."""
    noise = gumbel_noise(draw_keys(seed, draws, logits.shape[0]), logits.shape[1], dtype=logits.dtype)  # [S, n, I]
    return torch.softmax((logits + noise) / tau, -1).sum(0).clamp(max=1.0)


@pytest.mark.parametrize("tau", [0.5, 10.0])
def test_gradient_matches_naive_autograd(monkeypatch, tau):
    monkeypatch.setattr(gumbel, "CHUNK_ELEMENTS", 3 * 4 * 9)  # chunks of 3 draws: 3 + 3 + 1
    logits = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    weights = torch.randn(4, 9, dtype=torch.float64)
    ours = logits.clone().requires_grad_()
    out = multi_gumbel(ours, seed=5, draws=7, tau=tau)
    (out * weights).sum().backward()
    reference = logits.clone().requires_grad_()
    expected = _naive(reference, seed=5, draws=7, tau=tau)
    (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(ours.grad, reference.grad)
    assert ours.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    logits = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: MultiGumbel.apply(z, 11, 5, 0.7), (logits,))


def test_range_shape_and_cardinality():
    flat = multi_gumbel(torch.zeros(8, 300), seed=0, draws=30, tau=10.0)  # ≈ 0.1 per item: never clamped
    assert flat.shape == (8, 300) and flat.min() > 0 and flat.max() < 1
    torch.testing.assert_close(flat.sum(1), torch.full((8,), 30.0))  # each draw adds mass 1 to its row
    peaked = torch.full((8, 300), -50.0)
    peaked[:, :3] = 50.0  # every draw lands on the first three items: 30 draws, clamped to 1 each
    sharp = multi_gumbel(peaked, seed=0, draws=30, tau=1.0)
    assert sharp.min() >= 0 and sharp.max() <= 1
    torch.testing.assert_close(sharp.sum(1), torch.full((8,), 3.0))


def test_same_seed_same_matrix_and_backward_keeps_no_draws():
    logits = torch.randn(20, 50, requires_grad=True)
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = multi_gumbel(logits, seed=3, draws=200, tau=2.0)
    assert saved and sum(saved) <= 2 * logits.numel()  # the logits and the clamp's input, not 200 draws
    torch.testing.assert_close(out, multi_gumbel(logits, seed=3, draws=200, tau=2.0))
    assert not torch.equal(out, multi_gumbel(logits, seed=4, draws=200, tau=2.0))


def test_noise_is_gumbel_and_independent():
    """1.2M values of 100 draws x 30 rows x 400 items: Gumbel(0, 1)'s mean (Euler's γ), variance
    (π²/6) and CDF at a few points, and no correlation between neighbouring items, draws or rows."""
    g = gumbel_noise(draw_keys(12345, 100, 30), 400).double()  # [S, n, I]
    assert abs(g.mean() - 0.5772156649) < 0.01
    assert abs(g.var() - math.pi**2 / 6) < 0.02
    for x in (-1.0, 0.0, 1.0, 3.0):
        assert abs((g <= x).double().mean() - math.exp(-math.exp(-x))) < 0.003
    z = (g - g.mean()) / g.std()
    for a, b in ((z[:, :, 1:], z[:, :, :-1]), (z[1:], z[:-1]), (z[:, 1:], z[:, :-1])):
        assert abs((a * b).mean()) < 0.01
    assert not torch.equal(g, gumbel_noise(draw_keys(12346, 100, 30), 400).double())


@needs_kernels
@pytest.mark.parametrize("tau", [0.3, 10.0])
def test_fused_kernel_matches_the_torch_ops(monkeypatch, tau):
    """float32 on the CPU runs the C++ kernel; the same call with the kernel switched off runs the
    torch ops on the same noise. 37 items: vector lanes and a remainder; logits over a wide range."""
    logits = torch.randn(6, 37, generator=torch.Generator().manual_seed(2)) * 4
    weights = torch.randn(6, 37, generator=torch.Generator().manual_seed(3))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(kernels, "_loaded", None if fused else False)
        leaf = logits.clone().requires_grad_()
        out = MultiGumbel.apply(leaf, 9, 50, tau)
        (out * weights).sum().backward()
        results.append((out, leaf.grad))
    assert kernels._loaded is False and gumbel._fused(logits) is False  # the second pass ran the torch ops
    (out, grad), (ref_out, ref_grad) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.sum(1), torch.full((6,), 50.0))  # 50 draws of mass 1 each


@needs_kernels
def test_fused_gradient_matches_naive_autograd():
    assert kernels.load()
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(5, 40)
    ours = logits.clone().requires_grad_()
    (multi_gumbel(ours, seed=2, draws=30, tau=0.7) * weights).sum().backward()
    reference = logits.double().requires_grad_()
    (_naive(reference, seed=2, draws=30, tau=0.7) * weights.double()).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad.float(), rtol=1e-4, atol=1e-5)
