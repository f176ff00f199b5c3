"""Item content features: multi-hot genres over a stable vocabulary, standardised years with a
missing flag, texts; items the table does not list get empty features."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from distrec.data.dataset import InteractionDataset
from distrec.data.item_features import features_from_table, item_features
from distrec.errors import DataError
from tests.helpers import tiny_synthetic


def _table() -> pa.Table:
    return pa.table(
        {
            "item": pa.array([2, 0, 3], pa.int64()),
            "raw": pa.array([30, 10, 40], pa.int64()),
            "title": ["Heat", "Toy Story", None],
            "year": pa.array([1995, 1995, None], pa.int32()),
            "genres": pa.array([["Crime", "Action"], ["Animation"], None], pa.list_(pa.string())),
            "overview": [None, "Toys come alive.", None],
        }
    )


def test_features_by_hand() -> None:
    f = features_from_table(_table(), num_items=5)
    assert f.genre_names == ("Action", "Animation", "Crime")
    expected = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.float32)
    assert torch.equal(f.genres, expected)
    assert f.year_missing.tolist() == [0, 1, 0, 1, 1]
    assert f.year_stats == (1995.0, 1.0)  # one known value: std 0 falls back to 1
    assert f.year.tolist() == [0, 0, 0, 0, 0]
    assert f.texts() == ["Toy Story. Toys come alive.", "", "Heat", "", ""]
    assert f.dense().shape == (5, f.width) == (5, 5)


def test_fixed_vocabulary_and_year_stats_encode_new_items_alike() -> None:
    f = features_from_table(_table(), num_items=4, genre_names=("Crime", "Drama"), year_stats=(1990.0, 5.0))
    assert f.genres.tolist() == [[0, 0], [0, 0], [1, 0], [0, 0]]  # Action, Animation: not in the vocabulary
    assert f.year.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_index_out_of_range_is_refused() -> None:
    with pytest.raises(DataError, match="outside"):
        features_from_table(_table(), num_items=3)


def test_prepared_dataset(tmp_path) -> None:
    tiny_synthetic(str(tmp_path / "d"), users=50, items=40, ratings=800)
    dataset = InteractionDataset(str(tmp_path / "d"))
    f = item_features(dataset)
    assert f.genres.shape == (dataset.num_items, len(f.genre_names))
    assert (f.genres.sum(1) >= 1).all()  # every synthetic item has a genre
    assert list(f.genre_names) == sorted(f.genre_names)
    assert f.year_missing.sum() == 0 and abs(float(f.year.mean())) < 1e-4
    assert all(t for t in f.texts())
