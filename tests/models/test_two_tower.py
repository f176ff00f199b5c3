"""The two-tower in-batch softmax and its log-Q correction on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distrec.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss

E1 = math.exp(-1.0)
EYE = torch.eye(2)
IDS = torch.tensor([0, 1])
ONES = torch.ones(2)


def test_without_correction_each_row_is_a_softmax_over_the_batch():
    # logits = I: row i has 1 on its own item, 0 on the other -> −log(e / (e + 1)) = log(1 + e^−1)
    loss = in_batch_softmax_loss(EYE, EYE, IDS, temperature=1.0, log_q=None, weight=ONES)
    assert loss.item() == pytest.approx(math.log(1 + E1), rel=1e-6)


def test_log_q_subtracts_the_log_sampling_probability_of_each_column():
    # q = (0.75, 0.25): s(u, j) − log q_j. Row 0: log(1 + e^−1 · 0.75/0.25); row 1: log(1 + e^−1 · 0.25/0.75)
    log_q = torch.log(torch.tensor([0.75, 0.25]))
    loss = in_batch_softmax_loss(EYE, EYE, IDS, temperature=1.0, log_q=log_q, weight=ONES)
    expected = (math.log(1 + 3 * E1) + math.log(1 + E1 / 3)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(math.log(1 + E1))  # the correction does change it
    # a uniform q shifts every logit by the same amount: no change
    uniform = in_batch_softmax_loss(EYE, EYE, IDS, temperature=1.0, log_q=torch.log(torch.full((2,), 0.5)), weight=ONES)
    assert uniform.item() == pytest.approx(math.log(1 + E1), rel=1e-6)


def test_temperature_repeated_items_and_padding():
    # τ = 0.5 doubles the logits: log(1 + e^−2)
    assert in_batch_softmax_loss(EYE, EYE, IDS, temperature=0.5, log_q=None, weight=ONES).item() == pytest.approx(
        math.log(1 + math.exp(-2)), rel=1e-6
    )
    # the same item twice is never its own negative: each row has no negative left, loss 0
    same = in_batch_softmax_loss(EYE, EYE, torch.tensor([3, 3]), temperature=1.0, log_q=None, weight=ONES)
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    # a padding row (weight 0) is neither a query nor a negative
    padded = in_batch_softmax_loss(EYE, EYE, IDS, temperature=1.0, log_q=None, weight=torch.tensor([1.0, 0.0]))
    assert padded.item() == pytest.approx(0.0, abs=1e-7)


def test_towers_give_unit_vectors_and_ignore_history_padding():
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=8, id_dim=4, history=3, layers=1, heads=2, ffn=16, dropout=0.0)
    model = TwoTower(
        cfg, num_items=5, item_features=np.random.default_rng(0).random((5, 3)).astype(np.float32), device=torch.device("cpu")
    )
    model.eval()
    item = torch.tensor([1, 4])
    history = torch.tensor([[-1, 0, 2], [-1, -1, 3]])
    buckets = torch.tensor([[0, 5, 11], [0, 0, 3]])
    users, items = model(model.features(item, history), item, history, buckets)
    assert users.shape == items.shape == (2, 8)
    np.testing.assert_allclose(users.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    # what sits in a padded slot (its id is never looked up) does not change the user vector
    again, _ = model(model.features(item, history), item, history, buckets.masked_fill(history < 0, 7))
    torch.testing.assert_close(again, users)


def test_projection_per_distinct_item_equals_the_linear_layer_on_joined_inputs():
    torch.manual_seed(1)
    cfg = TwoTowerConfig(dim=8, id_dim=4, history=3, layers=1, heads=2, ffn=16)
    features = np.random.default_rng(1).random((6, 5)).astype(np.float32)
    model = TwoTower(cfg, num_items=6, item_features=features, device=torch.device("cpu"))
    ids = torch.tensor([[3, 3, 0], [5, -1, 3]])
    id_vectors = torch.randn(2, 3, 4)
    joined = torch.cat([id_vectors, torch.from_numpy(features)[ids.clamp(min=0)]], dim=-1)  # [2, 3, 4 + 5]
    torch.testing.assert_close(model._project(model.token, ids, id_vectors), model.token(joined))
