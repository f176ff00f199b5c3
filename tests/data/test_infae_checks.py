"""Any dataset in the ∞-AE authors' format is checked for what the format promises, without
--no-verify; ML-1M's official counts only where that release is recognised (distrec/data/infae.py)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.errors import DataError
from tests.data.test_infae_parser import write_infae


def _prepare(source, out, *, verify: bool = True) -> dict:
    return prepare_dataset(PrepareConfig(dataset="infae", source=str(source), out=str(out), verify_counts=verify))


def _stats(**changed) -> dict:
    """The authors' data_stats.json for write_infae's rows (part >= 0): 3 users, 4 items, 3/1/1 rows."""
    return {"num_users": 3, "num_items": 4, "num_train_interactions": 3, "num_test": 1, "num_val": 1, **changed}


def test_another_dataset_is_checked_and_prepared_without_no_verify(tmp_path):
    root = write_infae(tmp_path / "magazine")
    summary = _prepare(root, tmp_path / "out")
    assert summary["ratings"] == 5 and summary["removed_rows"] == 1
    verified = "\n".join(summary["verified"])
    assert f"{root}/index.npz: one part label per row (6), each 0, 1, 2 or -1" in verified
    assert f"{root}/total_data.hdf5: user ids are the authors' re-indexing, 0..2 with no gaps" in verified
    assert "official counts not checked: 6 ratings is no release this parser knows" in verified
    assert "data_stats.json" not in verified  # none beside it: nothing claimed


def test_data_stats_that_agree_are_checked(tmp_path):
    root = write_infae(tmp_path / "infae")
    (root / "data_stats.json").write_text(json.dumps(_stats()))
    summary = _prepare(root, tmp_path / "out")
    assert (
        f"{root}/data_stats.json: users, items and train/validation/test counts agree with the rows kept" in summary["verified"]
    )


@pytest.mark.parametrize("key, said, holds", [("num_items", 5, 4), ("num_test", 2, 1), ("num_users", 4, 3)])
def test_data_stats_that_disagree_are_refused(tmp_path, fails, key, said, holds):
    root = write_infae(tmp_path / "infae")
    (root / "data_stats.json").write_text(json.dumps(_stats(**{key: said})))
    message = fails("infae", root)
    assert (
        message == f"{root}/data_stats.json: counts disagree with total_data.hdf5 and index.npz after removal: "
        f"{key} {said} (the rows hold {holds})"
    )


def test_data_stats_that_are_not_the_authors_json(tmp_path, fails):
    root = write_infae(tmp_path / "infae")
    (root / "data_stats.json").write_text('{"users": 3}')
    assert fails("infae", root).startswith(f"{root}/data_stats.json: expected the authors' JSON object with")


def test_user_ids_with_a_gap_are_refused(tmp_path, fails):
    root = write_infae(tmp_path / "infae")
    with h5py.File(root / "total_data.hdf5", "r+") as f:
        f["user"][4] = 3  # user 2's only row now belongs to a user 3: ids 0, 1, 3
    message = fails("infae", root)
    assert (
        message == f"{root}/total_data.hdf5: user ids are not the authors' dense re-indexing: "
        "they run 0..3 over 3 users, and user 2 has no rows"
    )


ML_1M_ROWS = 1_000_209


def _ml1m_shaped(root, *, users: int, items: int):
    """A file with ML-1M's rating count, ``users`` dense users and ``items`` raw item ids."""
    root.mkdir(parents=True)
    rows = np.arange(ML_1M_ROWS)
    with h5py.File(root / "total_data.hdf5", "w") as f:
        f.create_dataset("user", data=(rows * users // ML_1M_ROWS).astype(np.int32))  # sorted, every user present
        f.create_dataset("item", data=(rows % items + 1).astype(np.int32))
        f.create_dataset("rating", data=(rows % 5 + 1).astype(np.float32))
    np.savez(root / "index.npz", data=np.where(rows % 10 == 0, 2, 0))
    return root


def test_ml1m_is_recognised_and_its_official_counts_checked(tmp_path):
    bad = _ml1m_shaped(tmp_path / "damaged", users=6040, items=3700)
    with pytest.raises(DataError) as e:
        _prepare(bad, tmp_path / "refused")
    assert str(e.value).startswith(
        "infae: 1,000,209 ratings as in ML-1M, but 6,040 users and 3,700 items; the release has 6,040 and 3,706"
    )
    assert not (tmp_path / "refused").exists() or not os.listdir(tmp_path / "refused")
    summary = _prepare(bad, tmp_path / "accepted", verify=False)  # --no-verify skips that comparison only
    assert "ML-1M recognised by its rating count; its official counts not checked (--no-verify)" in summary["verified"]
    assert any("user ids are the authors' re-indexing, 0..6,039" in line for line in summary["verified"])
    good = _prepare(_ml1m_shaped(tmp_path / "ml-1m", users=6040, items=3706), tmp_path / "out")
    assert "ML-1M: counts match the official release (6,040 users, 3,706 items, 1,000,209 ratings)" in good["verified"]
