"""Biased MF's fused objective against plain autograd on the same formula."""

from __future__ import annotations

import torch

from distrec.models.mf import _Objective, _split


def _reference(values, mean, rating, weight, cols, l2, bias_l2):
    u, i, bu, bi = _split(values, *cols)
    err = mean + bu + bi + (u * i).sum(1) - rating
    reg = l2 * (u.square().sum(1) + i.square().sum(1)) + bias_l2 * (bu.square() + bi.square())
    return (weight * (err.square() + reg)).sum() / values.shape[0]


def test_fused_objective_matches_autograd():
    g = torch.Generator().manual_seed(0)
    B, d = 7, 8
    cols = (0, 8, 16, 20, d)  # user, item, user_bias, item_bias, dim (widths 8, 8, 4, 4)
    values = torch.randn(B, 24, generator=g, dtype=torch.float64)
    values[:, [17, 18, 19, 21, 22, 23]] = 0  # fbgemm's padding columns of the bias tables: always zero in a model
    mean = torch.tensor([3.5], dtype=torch.float64)
    rating = torch.randint(1, 6, (B,), generator=g).double()
    weight = torch.tensor([1, 1, 1, 0, 1, 1, 0], dtype=torch.float64)  # two padding rows
    a_vals, a_mean = values.clone().requires_grad_(), mean.clone().requires_grad_()
    b_vals, b_mean = values.clone().requires_grad_(), mean.clone().requires_grad_()
    fused = _Objective.apply(a_vals, a_mean, rating, weight, cols, 0.05, 0.01)
    plain = _reference(b_vals, b_mean, rating, weight, cols, 0.05, 0.01)
    torch.testing.assert_close(fused, plain)
    (3 * fused).backward()
    (3 * plain).backward()
    torch.testing.assert_close(a_vals.grad, b_vals.grad)
    torch.testing.assert_close(a_mean.grad, b_mean.grad)
    assert a_vals.grad[3].abs().sum() == 0 and a_vals.grad[:, 9:12].abs().sum() > 0  # padding rows get nothing
    assert a_vals.grad[:, [17, 18, 19, 21, 22, 23]].abs().sum() == 0  # so padding columns stay zero
    assert torch.autograd.gradcheck(
        lambda v, m: _Objective.apply(v, m, rating, weight, cols, 0.05, 0.01),
        (a_vals.detach().requires_grad_(), a_mean.detach().requires_grad_()),
    )
