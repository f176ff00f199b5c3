"""Douban parser on small MATLAB v7.3 files written the way MATLAB writes them (HDF5, column-major)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from distrec.data.schema import DROPPED, TEST, TRAIN

FILE = "training_test_dataset.mat"
# 4 users × 3 items: not square, so a missed transpose cannot go unnoticed.
M = np.array([[5, 0, 3], [0, 4, 0], [1, 0, 0], [0, 0, 2]], dtype=np.float64)
TRAIN_MASK = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=np.float64)
TEST_MASK = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=np.float64)  # M[2, 0] is in neither


def write_mat(path: Path, **variables: np.ndarray) -> Path:
    """As MATLAB's ``save -v7.3``: a 512-byte user block, each m × n matrix stored as n × m."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=value.T).attrs["MATLAB_class"] = np.bytes_("double")
    return path


def write_sparse(group: h5py.Group, matrix: np.ndarray) -> None:
    """A MATLAB sparse matrix: compressed columns ``data``/``ir``/``jc``, row count in an attribute."""
    cols = [np.flatnonzero(matrix[:, j]) for j in range(matrix.shape[1])]
    group.create_dataset("ir", data=np.concatenate(cols).astype(np.uint64))
    group.create_dataset("jc", data=np.cumsum([0] + [len(c) for c in cols]).astype(np.uint64))
    group.create_dataset("data", data=np.concatenate([matrix[c, j] for j, c in enumerate(cols)]))
    group.attrs["MATLAB_sparse"] = np.uint64(matrix.shape[0])


def check(got) -> None:
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (4, 3, 5)
    assert got.users == [0, 1, 2, 3]
    assert got.items == [0, 2, 1]  # in order of first appearance: row by row, items ascending
    assert [(got.users[u], got.items[i]) for u, i in zip(got.column("user"), got.column("item"))] == [
        (0, 0),
        (0, 2),
        (1, 1),
        (2, 0),
        (3, 2),
    ]
    assert got.column("rating") == [5.0, 3.0, 4.0, 1.0, 2.0]
    assert got.column("ts") == [None] * 5
    assert got.column("split_official") == [TRAIN, TEST, TRAIN, DROPPED, TRAIN]
    assert got.summary["splits"]["official"]["counts"] == {"train": 3, "val": 0, "test": 1, "dropped": 1}
    assert got.summary["unsplit_ratings"] == 1 and got.summary["matrix_shape"] == [4, 3]


def test_dense_v73_matrices_are_transposed_back(tmp_path, prepare):
    path = write_mat(tmp_path / FILE, M=M, Otraining=TRAIN_MASK, Otest=TEST_MASK, W_users=np.eye(4))
    check(prepare("douban", path))


def test_sparse_matrices(tmp_path, prepare):
    path = tmp_path / FILE
    with h5py.File(path, "w", userblock_size=512) as f:
        write_sparse(f.create_group("M"), M)
        f.create_dataset("Otraining", data=TRAIN_MASK.T)
        write_sparse(f.create_group("Otest"), TEST_MASK)
    check(prepare("douban", path))


def test_entry_in_both_masks(tmp_path, fails):
    both = TEST_MASK.copy()
    both[1, 1] = 1
    path = write_mat(tmp_path / FILE, M=M, Otraining=TRAIN_MASK, Otest=both)
    assert fails("douban", path) == f"{path}: M[1, 1] (0-based user row, item column) is in both Otraining and Otest"


def test_mask_without_a_rating(tmp_path, fails):
    mask = TRAIN_MASK.copy()
    mask[3, 0] = 1
    path = write_mat(tmp_path / FILE, M=M, Otraining=mask, Otest=TEST_MASK)
    assert fails("douban", path) == f"{path}: M[3, 0] (0-based user row, item column) is in a mask but M has no rating there"


def test_rating_outside_the_scale(tmp_path, fails):
    ratings = M.copy()
    ratings[1, 1] = 6
    path = write_mat(tmp_path / FILE, M=ratings, Otraining=TRAIN_MASK, Otest=TEST_MASK)
    message = fails("douban", path)
    assert (
        message
        == f"{path}: M[1, 1] (0-based user row, item column): rating 6 is outside Douban (Monti et al. split)'s scale (1 to 5)"
    )


def test_missing_variable_and_wrong_shape(tmp_path, fails):
    path = write_mat(tmp_path / FILE, M=M, Otraining=TRAIN_MASK)
    assert fails("douban", path) == f"{path}: no variable 'Otest' (found: M, Otraining)"
    (tmp_path / "other").mkdir()
    path = write_mat(tmp_path / "other" / FILE, M=M, Otraining=TRAIN_MASK, Otest=TEST_MASK[:, :2])
    assert fails("douban", path) == f"{path}: 'Otest' is 4×2, M is 4×3"


def test_not_a_v73_file(tmp_path, fails):
    path = tmp_path / FILE
    path.write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(200))  # a v5 file is not HDF5
    assert fails("douban", path).startswith(f"{path}: not a readable MATLAB v7.3 (HDF5) file")


def test_rating_between_whole_stars_names_its_cell(tmp_path, fails):
    ratings = M.copy()
    ratings[3, 2] = 2.5  # Douban's ratings are 1 to 5 whole stars
    path = write_mat(tmp_path / FILE, M=ratings, Otraining=TRAIN_MASK, Otest=TEST_MASK)
    assert fails("douban", path) == (
        f"{path}: M[3, 2] (0-based user row, item column): rating 2.5 is off Douban (Monti et al. split)'s scale, "
        "which goes from 1 to 5 in steps of 1"
    )
