"""The multi-Gumbel sampler: its recomputing backward against plain autograd and finite
differences, its range and cardinality, and that it does not keep the draws for backward."""

from __future__ import annotations

import pytest
import torch

import distrec.distill.gumbel as gumbel
from distrec.distill.gumbel import MultiGumbel, gumbel_noise, multi_gumbel


def _naive(logits: torch.Tensor, *, seed: int, chunks: list[int], tau: float) -> torch.Tensor:
    """The obviously correct version: every draw kept in the autograd graph."""
    generator = torch.Generator().manual_seed(seed)
    draws = [
        torch.softmax((logits + gumbel_noise((c, *logits.shape), generator, dtype=logits.dtype, device=logits.device)) / tau, -1)
        for c in chunks
    ]
    return torch.cat(draws).sum(0).clamp(max=1.0)


@pytest.mark.parametrize("tau", [0.5, 10.0])
def test_gradient_matches_naive_autograd(monkeypatch, tau):
    monkeypatch.setattr(gumbel, "CHUNK_ELEMENTS", 3 * 4 * 9)  # chunks of 3 draws: 3 + 3 + 1
    logits = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    weights = torch.randn(4, 9, dtype=torch.float64)
    ours = logits.clone().requires_grad_()
    out = multi_gumbel(ours, seed=5, draws=7, tau=tau)
    (out * weights).sum().backward()
    reference = logits.clone().requires_grad_()
    expected = _naive(reference, seed=5, chunks=[3, 3, 1], tau=tau)
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
