"""Douban (3000 users × 3000 movies) as split by Monti et al., "Geometric Matrix Completion with
Recurrent Multi-Graph Neural Networks" (NIPS 2017), and reused by GC-MC, IGMC and GLocal-K.

``training_test_dataset.mat`` is a MATLAB v7.3 file, which is HDF5: ``M`` is the users × items
rating matrix (0 = no rating), ``Otraining`` and ``Otest`` are 0/1 masks of the same shape, and
``W_users`` (the social graph) is ignored. Raw ids are the 0-based row (user) and column (item)
of ``M``; rows are read user by user, items ascending. The file circulates under other names
too, so any ``.mat`` in the source is taken if it is the only one, or the only one of several
that holds ``M``, ``Otraining`` and ``Otest``; a source with two such files is refused.

The official split ``official``: ratings under ``Otraining`` are TRAIN, under ``Otest`` TEST.
Ratings under neither mask stay in the dataset with the code DROPPED (so the counts are those
of ``M``) and are counted in the manifest as ``unsplit_ratings``; an entry under both masks, or a
mask entry where ``M`` has no rating, is an error.

Counts: the papers report 3000 users, 3000 items, 136,891 ratings (matrix size and nonzeros);
they are not enforced (``expected=None``) because whether every row and column of ``M`` holds a
rating could not be checked against the file here.
"""

from __future__ import annotations

import h5py
import numpy as np

from distrec.data.hdf5 import open_hdf5
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import DROPPED, TEST, TRAIN, RatingChunk
from distrec.data.source import Source
from distrec.data.textparse import first_bad_row
from distrec.errors import DataError

__all__ = ["SPECS", "find_mat", "read_matlab_matrix"]

FILE = "training_test_dataset.mat"  # the name in Monti et al.'s repository
VARIABLES = ("M", "Otraining", "Otest")


def read_matlab_matrix(h5: h5py.File, key: str, label: str) -> np.ndarray:
    """The MATLAB variable ``key`` as a dense rows × columns array.

    MATLAB stores arrays column-major and v7.3 writes them to HDF5 as they lie in memory, so an
    m × n matrix appears as an n × m dataset: it is transposed back here (``M`` is square, so
    only the layout, not the shape, tells). A sparse matrix is a group of ``data``, ``ir`` (row
    of each value) and ``jc`` (column starts), with the row count in its ``MATLAB_sparse``
    attribute; it needs no transpose."""
    if key not in h5:
        raise DataError(f"{label}: no variable {key!r} (found: {', '.join(sorted(h5))})")
    node = h5[key]
    if isinstance(node, h5py.Group):
        parts = {k: np.asarray(node[k]) for k in ("data", "ir", "jc") if k in node}
        if len(parts) != 3 or "MATLAB_sparse" not in node.attrs:
            raise DataError(f"{label}: {key!r} is neither a matrix nor a MATLAB sparse matrix (data, ir, jc)")
        data, ir, jc = parts["data"], parts["ir"].astype(np.int64), parts["jc"].astype(np.int64)
        rows, cols = int(node.attrs["MATLAB_sparse"]), len(jc) - 1
        consistent = len(jc) and len(data) == len(ir) == jc[-1] and (np.diff(jc) >= 0).all()
        if not (consistent and ((ir >= 0) & (ir < rows)).all()):
            raise DataError(f"{label}: sparse matrix {key!r} is inconsistent (data, ir and jc do not agree)")
        dense = np.zeros((rows, cols), dtype=data.dtype)
        dense[ir, np.repeat(np.arange(cols), np.diff(jc))] = data
        return dense
    if node.ndim != 2:
        raise DataError(f"{label}: {key!r} has {node.ndim} dimensions, expected a matrix")
    return np.asarray(node).T


def find_mat(source: Source) -> str:
    """The name of the source's Douban ``.mat``: its only ``.mat``, or the only one of several
    holding ``M``, ``Otraining`` and ``Otest`` (a lone file is read as it is, so what is wrong
    with it is reported by name)."""
    names = [n for n in source.names() if n.lower().endswith(".mat")]
    if len(names) == 1:
        return names[0]
    if not names:
        raise DataError(f"{source}: no .mat file; expected a MATLAB v7.3 file holding {', '.join(VARIABLES)} (e.g. {FILE})")
    holding = [n for n in names if _holds_variables(source, n)]
    if len(holding) == 1:
        return holding[0]
    if not holding:
        raise DataError(f"{source}: none of the .mat files {names} is a MATLAB v7.3 file holding {', '.join(VARIABLES)}")
    raise DataError(
        f"{source}: {' and '.join(source.label(n) for n in holding)} each hold {', '.join(VARIABLES)}; "
        "pass the one to prepare as --source"
    )


def _holds_variables(source: Source, name: str) -> bool:
    try:
        with open_hdf5(source, name) as h5:
            return all(key in h5 for key in VARIABLES)
    except DataError:  # not HDF5: a MATLAB v5 file, or something else named .mat
        return False


def _read(source: Source | None, options: ReadOptions) -> Parsed:
    assert source is not None
    name = find_mat(source)
    label = source.label(name)
    with open_hdf5(source, name, what="MATLAB v7.3 (HDF5)") as h5:
        ratings = read_matlab_matrix(h5, "M", label)
        train = read_matlab_matrix(h5, "Otraining", label) != 0
        test = read_matlab_matrix(h5, "Otest", label) != 0
    for key, mask in (("Otraining", train), ("Otest", test)):
        if mask.shape != ratings.shape:
            (m, n), (p, q) = mask.shape, ratings.shape
            raise DataError(f"{label}: {key!r} is {m}×{n}, M is {p}×{q}")
    _check_masks(label, ratings, train, test)
    user, item = np.nonzero(ratings)
    codes = np.full(len(user), DROPPED, dtype=np.int8)
    codes[train[user, item]] = TRAIN
    codes[test[user, item]] = TEST
    chunk = RatingChunk(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=ratings[user, item].astype(np.float32),
        ts=None,
        splits={"official": codes},
        where=lambda r: f"{label}: M[{user[r]}, {item[r]}] (0-based user row, item column)",
    )
    meta = {"matrix_shape": list(ratings.shape), "unsplit_ratings": int((codes == DROPPED).sum())}
    return Parsed(chunks=iter([chunk]), meta=meta)


def _check_masks(label: str, ratings: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    for problem, bad in (
        ("is in both Otraining and Otest", train & test),
        ("is in a mask but M has no rating there", (train | test) & (ratings == 0)),
    ):
        first = first_bad_row(bad.ravel())
        if first is not None:
            u, i = divmod(first, ratings.shape[1])
            raise DataError(f"{label}: M[{u}, {i}] (0-based user row, item column) {problem}")


SPECS = [
    DatasetSpec(
        name="douban",
        title="Douban (Monti et al. split)",
        urls=("https://github.com/fmonti/mgcnn/raw/master/Data/douban/training_test_dataset.mat",),
        read=_read,
        rating_range=(1, 5),
        rating_step=1,
        expected=None,
        official_splits=("official",),
        default_split="official",
    )
]
