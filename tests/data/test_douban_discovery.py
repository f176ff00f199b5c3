"""Douban's ``.mat`` under any name: the one that holds M, Otraining and Otest is found; a source
holding two of them is refused, naming both (distrec/data/douban.py find_mat)."""

from __future__ import annotations

import h5py
import numpy as np

from tests.data.test_douban_parser import TEST_MASK, TRAIN_MASK, M, check, write_mat


def test_any_name_is_accepted(tmp_path, prepare):
    root = tmp_path / "douban"
    root.mkdir()
    write_mat(root / "douban_monti.mat", M=M, Otraining=TRAIN_MASK, Otest=TEST_MASK)
    check(prepare("douban", root))


def test_the_mat_holding_the_variables_is_chosen_among_others(tmp_path, prepare):
    root = tmp_path / "douban"
    (root / "graphs").mkdir(parents=True)
    write_mat(root / "graphs" / "W_users.mat", W_users=np.eye(4))  # HDF5, other variables
    (root / "old_v5.mat").write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(200))  # not HDF5
    write_mat(root / "data.mat", M=M, Otraining=TRAIN_MASK, Otest=TEST_MASK, W_users=np.eye(4))
    check(prepare("douban", root))


def test_two_files_holding_the_variables_are_refused_by_name(tmp_path, fails):
    root = tmp_path / "douban"
    root.mkdir()
    for name in ("training_test_dataset.mat", "douban.mat"):
        write_mat(root / name, M=M, Otraining=TRAIN_MASK, Otest=TEST_MASK)
    message = fails("douban", root)
    assert f"{root}/douban.mat and {root}/training_test_dataset.mat each hold M, Otraining, Otest" in message
    assert "--source" in message


def test_no_mat_and_no_usable_mat(tmp_path, fails):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "README.txt").write_text("nothing here\n")
    assert "no .mat file; expected a MATLAB v7.3 file holding M, Otraining, Otest" in fails("douban", root)
    for name in ("a.mat", "b.mat"):
        with h5py.File(root / name, "w", userblock_size=512) as f:
            f.create_dataset("M", data=M.T)  # no masks
    assert "none of the .mat files ['a.mat', 'b.mat'] is a MATLAB v7.3 file holding M, Otraining, Otest" in fails("douban", root)
