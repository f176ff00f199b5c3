"""The DDS-attention compressor's parts: the gate's selection, codes in storage form, the stored
artifacts' round trip, the baselines' byte budget and folding new users into a biased MF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.compress.baselines import PCACodec, ScalarCodec
from distrec.data.dataset import Interactions
from distrec.models.compressor import Compressor, CompressorConfig, HardConcreteGate, code_size
from distrec.models.foldin import fold_in_users


@pytest.mark.parametrize("groups,k", [(16, 1), (16, 12), (8, 8)])
def test_gate_selects_exactly_k_groups_at_inference_and_deterministically(groups, k):
    torch.manual_seed(0)
    gate = HardConcreteGate(dim=groups, groups=groups, k=k, keep_all_prob=0.5, temperature=2 / 3)
    torch.nn.init.normal_(gate.score.weight, std=1.0)  # scores that differ per entity
    x = torch.randn(512, groups)
    gate.eval()
    values, mask, _ = gate(x)
    assert (mask.sum(1) == k).all()  # keep_all_prob applies in training only
    assert (values[~mask] == 0).all()
    assert len({tuple(row) for row in mask.int().tolist()}) > 1 or k == groups  # the choice is per entity
    again, mask_again, _ = gate(x)
    assert torch.equal(mask, mask_again) and torch.equal(values, again)
    # the k selected groups are those with the largest scores
    top = gate.score(x).topk(k, dim=1).indices
    assert torch.equal(mask, torch.zeros_like(mask).scatter(1, top, True))


def test_gate_in_training_samples_top_k_or_keeps_all():
    torch.manual_seed(0)
    gate = HardConcreteGate(dim=10, groups=10, k=3, keep_all_prob=0.0, temperature=2 / 3).train()
    _, mask, _ = gate(torch.randn(256, 10))
    assert (mask.sum(1) == 3).all()
    gate.keep_all_prob = 1.0
    _, mask, _ = gate(torch.randn(256, 10))
    assert mask.all()


def test_compressor_inference_reads_only_the_k_selected_features():
    torch.manual_seed(0)
    model = Compressor(CompressorConfig(hidden=[16], keep_fraction=0.5), dim=8, code_size=code_size(8, 4, "int8")).eval()
    x = torch.randn(64, 8)
    _, mask, _ = model.gate((x - model.mean) / model.scale)
    assert (mask.sum(1) == 4).all()
    code, _ = model.encode(x)
    assert code.shape == (64, 8) and code.abs().max() <= 1
    assert torch.allclose(code * 127, torch.round(code * 127), atol=1e-4)  # int8 levels


def test_code_size_meets_the_byte_budget_or_says_why():
    assert code_size(32, 4, "int8") == 32 and code_size(32, 8, "int8") == 16 and code_size(32, 8, "float16") == 8
    with pytest.raises(ValueError, match="whole number"):
        code_size(10, 8, "float16")


def test_baselines_spend_the_same_bytes_and_reconstruct_low_rank_rows():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 4)) @ rng.normal(size=(4, 32))).astype(np.float32)
    pca = PCACodec(x, code_size=16, dtype="int8")
    assert pca.encode(x).shape == (500, 16) and pca.bytes_per_row == 16
    assert np.abs(pca.decode(pca.encode(x)) - x).max() < 0.05 * np.abs(x).max()
    scalar = ScalarCodec.for_ratio(x, 8)
    assert scalar.bits == 4 and scalar.encode(x).shape == (500, 16) and scalar.bytes_per_row == 16
    assert np.abs(scalar.decode(scalar.encode(x)) - x).max() <= scalar.step.max() / 2 + 1e-5


def test_fold_in_recovers_a_users_factors_from_exact_ratings():
    rng = np.random.default_rng(0)
    items, d = 60, 4
    q, b_i = rng.normal(size=(items, d)), rng.normal(size=items) * 0.1
    p, b_u, mu = np.array([[0.5, -0.2, 0.3, 0.1]]), np.array([0.4]), 3.5
    item = np.arange(items)
    rating = mu + b_i + b_u[0] + q @ p[0]
    ratings = Interactions(np.full(items, 7), item, rating.astype(np.float32))
    vec, bias = fold_in_users(
        ratings,
        np.array([7]),
        item_vector=q.astype(np.float32),
        item_bias=b_i.astype(np.float32),
        global_mean=mu,
        l2=1e-6,
        bias_l2=1e-6,
    )
    assert np.allclose(vec[0], p[0], atol=1e-3) and abs(bias[0] - b_u[0]) < 1e-3
    none, _ = fold_in_users(
        ratings,
        np.array([9]),
        item_vector=q.astype(np.float32),
        item_bias=b_i.astype(np.float32),
        global_mean=mu,
        l2=0.05,
        bias_l2=0.05,
    )
    assert not none.any()  # a user without ratings gets the prior


@pytest.mark.gpu
def test_compressor_step_and_codes_on_cuda_match_cpu():
    """One AdamW step (gate and batch norm in eval mode, so no noise is drawn) and the stored
    codes are the same on CPU and CUDA; compress() brings the codes back to the host."""
    from distrec.compress.codes import compress, decompress

    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3))
    out = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = Compressor(CompressorConfig(hidden=[12], code_dtype="float16"), dim=16, code_size=8)
        model.set_standardisation(x.mean(0), x.std(0))
        model.to(device).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        x_hat, _ = model(x.to(device))
        loss = (x_hat - x.to(device)).square().mean()
        loss.backward()
        opt.step()
        codes = compress(x.numpy(), model)
        out.append((float(loss.detach()), {k: v.cpu() for k, v in model.state_dict().items()}, codes, decompress(codes, model)))
    (loss_cpu, state_cpu, codes_cpu, back_cpu), (loss_gpu, state_gpu, codes_gpu, back_gpu) = out
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-4)
    for k, v in state_cpu.items():
        torch.testing.assert_close(state_gpu[k], v, rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose(codes_gpu.astype(np.float32), codes_cpu.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(back_gpu, back_cpu, atol=1e-2)
