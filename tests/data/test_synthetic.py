"""The synthetic generator: planted structure, exact counts, block-by-block generation, and a
noise floor that matches simulation."""

from __future__ import annotations

import numpy as np
import pytest

from distrec.data import synthetic
from distrec.data.dataset import InteractionDataset
from distrec.data.prepare import PrepareConfig, prepare_dataset


def _prepare(out, **sizes) -> dict:
    return prepare_dataset(PrepareConfig(dataset="synthetic", out=str(out), sizes=sizes, seed=3, rows_per_shard=4000))


def test_many_blocks_give_exact_distinct_ratings(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_RATINGS", 2000)  # ~10 blocks
    summary = _prepare(tmp_path / "a", users=400, items=300, ratings=20_000)
    assert summary["users"] == 400 and summary["items"] == 300
    assert abs(summary["ratings"] - 20_000) <= 20
    ds = InteractionDataset(str(tmp_path / "a"))
    rows = ds.read(split=None, parts=["train", "val", "test"], with_ts=True)
    pairs = rows.user * 1000 + rows.item
    assert len(np.unique(pairs)) == len(pairs)  # no user rates an item twice
    assert set(np.unique(rows.rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert rows.ts.min() >= 946_684_800 and rows.ts.max() < 1_700_000_000
    assert 0.5 < summary["noise_floor_rmse"] < 1.0


def test_same_seed_same_data(tmp_path):
    a = _prepare(tmp_path / "a", users=200, items=100, ratings=5000)
    b = _prepare(tmp_path / "b", users=200, items=100, ratings=5000)
    sha = lambda s: [f.sha256 for f in InteractionDataset(s).store.manifest.files if f.path.startswith("part-")]  # noqa: E731
    assert sha(str(tmp_path / "a")) == sha(str(tmp_path / "b"))
    assert a["noise_floor_rmse"] == b["noise_floor_rmse"]


@pytest.mark.parametrize("score", [0.3, 1.7, 3.2, 4.9, 6.0])
def test_conditional_variance_matches_simulation(score):
    shape = synthetic.Shape(users=1, items=1, ratings=1)
    exact = synthetic._conditional_variance(np.array([score]), shape, 0.85)[0]
    rng = np.random.default_rng(0)
    noisy = score + rng.normal(0, 0.85, 400_000)
    simulated = np.clip(np.round(noisy), 1, 5).var()
    assert exact == pytest.approx(simulated, rel=0.02, abs=1e-3)
