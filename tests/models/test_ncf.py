"""NCF with content profiles, unsharded: what the profile may and may not see, and the attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distrec.data.dataset import Interactions
from distrec.data.histories import RatingHistories
from distrec.models.ncf import NCF, NCFConfig

USERS, ITEMS, FEATURES = 6, 12, 5


def _model(history: Interactions, **cfg) -> NCF:
    torch.manual_seed(0)
    features = (torch.rand(ITEMS, FEATURES) < 0.4).float()
    config = NCFConfig(dim=8, init_std=0.3, hidden=[8], **cfg)
    model = NCF(
        config,
        num_users=USERS,
        num_items=ITEMS,
        global_mean=3.5,
        rating_range=(1.0, 5.0),
        histories=RatingHistories.from_interactions(history, num_users=USERS),
        item_features=features,
        device=torch.device("cpu"),
    )
    with torch.no_grad():  # random item rows, so ID parts matter too
        for table in model.sparse.embedding_bags.values():
            table.weight.normal_(0, 0.3)
    return model


def _history(rating_of_item_3: float = 4.0) -> Interactions:
    # users 0 and 1 rated the same items alike; user 2 rated item 3 as given
    user = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    item = np.array([1, 2, 3, 1, 2, 3, 3, 4, 5])
    rating = np.array([5, 1, 4, 5, 1, 4, rating_of_item_3, 2, 3], dtype=np.float32)
    return Interactions(user=user, item=item, rating=rating)


def _predict(model: NCF, user: list[int], item: list[int], **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(*model.features(torch.tensor(user), torch.tensor(item)), **kw)


@pytest.mark.parametrize("aggregate", ["mean", "attention"])
def test_target_rating_never_leaks_through_the_profile(aggregate):
    low, high = _model(_history(1.0), aggregate=aggregate), _model(_history(5.0), aggregate=aggregate)
    # user 2's rating of item 3 is in their history: predicting item 3 must not read it ...
    torch.testing.assert_close(_predict(low, [2], [3]), _predict(high, [2], [3]))
    # ... while predicting another item does
    assert not torch.allclose(_predict(low, [2], [6]), _predict(high, [2], [6]))


@pytest.mark.parametrize("item_input", ["content", "both"])
def test_profile_users_have_no_parameters_of_their_own(item_input):
    model = _model(_history(), item_input=item_input)
    pred = _predict(model, [0, 1, 2, 5], [7, 7, 7, 7])
    # the same profile, the same prediction whoever the user is (up to rounding: a row's sums
    # depend on its position in the batch under the vectorised kernels)
    torch.testing.assert_close(pred[0], pred[1])
    assert not torch.allclose(pred[0], pred[2])  # another profile, another prediction
    assert torch.isfinite(pred).all()  # user 5 has no history at all


def test_attention_weights_cover_the_history_without_the_target():
    model = _model(_history())
    weights = _predict(model, [0, 0], [3, 9], explain=True)  # [2, L]
    block = model.histories.block(np.array([0]), max_len=model.cfg.max_history)
    target_at = int((block.item[0] == 3).nonzero()[0, 0])
    assert weights[0, target_at] == 0 and (weights[1] > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(2))


def test_bce_predictions_stay_on_the_rating_scale_and_the_loss_falls():
    model = _model(_history(), loss="bce")
    data = _history()
    user, item, rating = torch.from_numpy(data.user), torch.from_numpy(data.item), torch.from_numpy(data.rating)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = model(*model.features(user, item), rating, torch.ones(len(user)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    pred = _predict(model, user.tolist(), item.tolist())
    assert ((pred > 1) & (pred < 5)).all() and losses[-1] < losses[0]
