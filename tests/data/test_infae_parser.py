"""The ∞-AE / Distill-CF ML-1M split: total_data.hdf5 + index.npz as the authors ship them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from distrec.data.schema import TEST, TRAIN, VAL

USER = np.array([0, 0, 1, 1, 2, 0], dtype=np.int32)  # 0-based raw user ids
ITEM = np.array([1193, 661, 1193, 914, 3408, 914], dtype=np.int32)  # MovieLens movie ids
RATING = np.array([5, 3, 4, 3, 4, 1], dtype=np.float32)
PART = np.array([0, 2, 0, -1, 1, 0])  # row 3 was removed by the authors


def write_infae(root: Path, part: np.ndarray = PART) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "total_data.hdf5", "w") as f:
        for name, value in (("user", USER), ("item", ITEM), ("rating", RATING)):
            f.create_dataset(name, data=value)
    np.savez(root / "index.npz", data=part)
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n3408::Erin Brockovich (2000)::Drama\n"
    (root / "movies.dat").write_bytes(movies.encode("latin-1"))
    return root


def test_official_split_and_removed_rows(tmp_path, prepare):
    got = prepare("infae", write_infae(tmp_path / "infae"))
    keep = PART >= 0
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (3, 4, 5)
    assert got.summary["removed_rows"] == 1
    assert [got.users[u] for u in got.column("user")] == USER[keep].tolist()
    assert [got.items[i] for i in got.column("item")] == ITEM[keep].tolist()
    assert got.column("rating") == RATING[keep].tolist()
    assert got.column("split_official") == [TRAIN, TEST, TRAIN, VAL, TRAIN]
    assert got.column("ts") == [None] * 5
    assert got.table("items.parquet").to_pydict()["title"] == ["One Flew Over the Cuckoo's Nest", "Erin Brockovich"]


def test_unknown_part_code(tmp_path, fails):
    root = write_infae(tmp_path / "infae", np.array([0, 2, 0, 3, 1, 0]))
    assert fails("infae", root) == f"{root}/index.npz: row 3 has part 3, expected -1, 0, 1 or 2"


def test_lengths_differ(tmp_path, fails):
    root = write_infae(tmp_path / "infae", PART[:4])
    assert "lengths differ (user 6, item 6, rating 6, index 4)" in fails("infae", root)


def test_rating_outside_the_scale_names_the_row(tmp_path, fails):
    root = write_infae(tmp_path / "infae")
    with h5py.File(root / "total_data.hdf5", "r+") as f:
        f["rating"][4] = 0
    message = fails("infae", root)
    assert message.startswith(f"{root}/total_data.hdf5, row 4: rating 0 is outside") and message.endswith("scale (1 to 5)")


def test_truncated_files(tmp_path, fails):
    root = write_infae(tmp_path / "infae")
    data = (root / "index.npz").read_bytes()
    (root / "index.npz").write_bytes(data[: len(data) // 2])
    assert fails("infae", root).startswith(f"{root}/index.npz: expected an npz archive with key 'data'")
    root = write_infae(tmp_path / "infae2")
    data = (root / "total_data.hdf5").read_bytes()
    (root / "total_data.hdf5").write_bytes(data[:1000])
    assert fails("infae", root).startswith(f"{root}/total_data.hdf5: not a readable HDF5 file")
