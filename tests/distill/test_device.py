"""Distill-CF on CUDA against the CPU: the step's loss and the gradient of the synthetic users,
and the multi-Gumbel sample (its noise is counter-based, so the CPU's C++ kernel and CUDA's torch
ops draw the same noise from the same seed)."""

from __future__ import annotations

import pytest
import torch

from distrec.distill.gumbel import multi_gumbel
from distrec.distill.objective import distill_loss
from distrec.models.closed_form import InfAEConfig


@pytest.mark.gpu
def test_a_distill_step_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    support = torch.rand(12, 30, generator=gen, dtype=torch.float64)
    targets = (torch.rand(40, 30, generator=gen) < 0.2).double()
    out = []
    for device in ("cpu", "cuda"):
        x = support.clone().to(device).requires_grad_()
        loss, parts = distill_loss(
            x, targets.to(device), model=InfAEConfig(), lam=1.0, real_cardinality=6.0, cardinality_reg=1e-3
        )
        loss.backward()
        assert parts["ce"].device.type == device  # the parts stay on the device until the loop reads them
        out.append((loss.detach().cpu(), x.grad.cpu()))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-6, atol=1e-10)


@pytest.mark.gpu
def test_multi_gumbel_draws_on_the_logits_device():
    logits = torch.randn(5, 50, device="cuda", requires_grad=True)
    x = multi_gumbel(logits, seed=3, draws=20, tau=1.0)
    assert x.device.type == "cuda" and float(x.min()) >= 0 and float(x.max()) <= 1
    again = multi_gumbel(logits, seed=3, draws=20, tau=1.0)
    torch.testing.assert_close(x, again)  # seeded: the same draws
    x.sum().backward()
    assert logits.grad is not None and logits.grad.device.type == "cuda"


@pytest.mark.gpu
def test_multi_gumbel_on_cuda_matches_cpu():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(1)) * 3
    weights = torch.randn(5, 50)
    out = []
    for device in ("cpu", "cuda"):
        leaf = logits.clone().to(device).requires_grad_()
        x = multi_gumbel(leaf, seed=3, draws=20, tau=0.5)
        (x * weights.to(device)).sum().backward()
        out.append((x.detach().cpu(), leaf.grad.cpu()))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-4, atol=1e-5)
