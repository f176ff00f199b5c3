"""GLocal-K's parts against slow, obviously-correct references on tiny inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distrec.models.glocal_k import GLocalK, GLocalKConfig, local_kernel


def _model(users: int = 9, items: int = 7, **cfg) -> GLocalK:
    return GLocalK(GLocalKConfig(hidden=6, kernel_dim=3, **cfg), num_users=users, num_items=items, seed=0).double()


def _ratings(items: int = 7, users: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    r = torch.randint(1, 6, (items, users), generator=g).double()
    return r * (torch.rand(items, users, generator=g) < 0.5)  # [I, U], 0 = unrated


def test_local_kernel_is_the_truncated_rbf_and_exactly_zero_outside_its_support():
    u = torch.tensor([[0.0, 0.0], [0.3, 0.4], [2.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    slow = torch.tensor([[max(0.0, 1.0 - float((a - b).square().sum())) for b in v] for a in u], dtype=torch.float64)
    k = local_kernel(u, v)
    torch.testing.assert_close(k, slow)
    assert k[2, 0] == 0.0 and k[0, 1] == 0.0  # |u − v|² = 4 and exactly 1: switched off


def test_pooling_shortcut_equals_the_mean_of_the_decoded_matrix():
    model, r = _model(), _ratings()
    with torch.no_grad():
        gk = model.global_kernel(r, first_item=0)  # [1, 1, 3, 3]
        pooled = model.decoder(model.encode(r)).mean(1)  # [I]: the decoder's output, averaged over users
        slow = (pooled @ model.conv_kernel).view(1, 1, 3, 3)
    torch.testing.assert_close(gk, slow)


def test_blocks_with_halo_rows_convolve_like_the_whole_matrix():
    model, r = _model(), _ratings()
    kernel = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    whole = torch.relu(F.conv2d(r[None, None], kernel, padding=1))[0, 0]  # [I, U], zero "same" padding
    padded = F.pad(r, (0, 0, 1, 1))  # one zero row above and below the matrix
    blocks = [model.convolve(padded[a : b + 2], kernel) for a, b in ((0, 3), (3, 7))]  # items [0,3), [3,7)
    torch.testing.assert_close(torch.cat(blocks), whole)


def test_objective_halves_sums_as_the_authors_tensorflow_l2_loss():
    model, r = _model(lambda_2=2.0, lambda_s=0.5), _ratings()
    pred = torch.full_like(r, 3.0)
    observed = r > 0
    assert float(model.data_loss(pred, r)) == float(0.5 * ((r - 3.0)[observed] ** 2).sum())
    reg = sum(1.0 * layer.W.square().sum() + 0.25 * layer.kernel().square().sum() for layer in model.layers())
    torch.testing.assert_close(model.regularizer(), reg)


@pytest.mark.gpu
def test_objective_and_gradients_on_cuda_match_cpu():
    """The same seed gives the same weights on any device (built on the CPU, then moved); the
    fine-tuning objective and every parameter's gradient agree between CPU and CUDA."""
    results = []
    for device in ("cpu", "cuda"):
        model, r = _model().to(device), _ratings().to(device)
        padded = F.pad(r, (0, 0, 1, 1))  # gk 3: one zero halo row on each side
        loss = model.data_loss(model(padded, first_item=0, stage="finetune"), r) + model.regularizer()
        loss.backward()
        results.append((loss.detach().cpu(), {n: p.grad.detach().cpu() for n, p in model.named_parameters()}))
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-10, atol=1e-10)
    for name, g in grads_cpu.items():
        torch.testing.assert_close(grads_gpu[name], g, rtol=1e-8, atol=1e-10, msg=name)
