"""The ML-1M split of "Infinite Recommendation Networks" (∞-AE, Distill-CF), as its authors ship it.

``total_data.hdf5`` holds datasets ``user`` (0-based raw user id), ``item`` (raw MovieLens movie
id) and ``rating``; ``index.npz`` key ``data`` gives each row's part: 0 train, 1 validation,
2 test, -1 removed. Removed rows are dropped before users and items are indexed, and the split
is recorded as ``official``. A ``movies.dat`` placed beside them supplies titles and genres.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from distrec.data.hdf5 import open_hdf5
from distrec.data.movielens import read_movies_dat
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import RatingChunk
from distrec.data.source import Source
from distrec.storage.manifest import DataError

__all__ = ["SPECS"]


def _read(source: Source | None, options: ReadOptions) -> Parsed:
    assert source is not None
    data_label, index_label = source.label("total_data.hdf5"), source.label("index.npz")
    with open_hdf5(source, "total_data.hdf5") as h5:
        missing = [k for k in ("user", "item", "rating") if k not in h5]
        if missing:
            raise DataError(f"{data_label}: missing dataset(s) {missing}; expected user, item, rating")
        user, item, rating = (np.asarray(h5[k][:]) for k in ("user", "item", "rating"))
    with source.open("index.npz") as f:
        try:
            npz = np.load(io.BytesIO(f.read()), allow_pickle=False)
            index = np.asarray(npz["data"])
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:  # npz is a zip archive
            raise DataError(f"{index_label}: expected an npz archive with key 'data' ({e})") from None
    if not (len(user) == len(item) == len(rating) == len(index)):
        raise DataError(
            f"{data_label}, {index_label}: lengths differ (user {len(user)}, item {len(item)}, "
            f"rating {len(rating)}, index {len(index)})"
        )
    bad = ~np.isin(index, (-1, 0, 1, 2))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{index_label}: row {r} has part {index[r]}, expected -1, 0, 1 or 2")
    keep = index >= 0
    chunk = RatingChunk(
        user=user[keep].astype(np.int64),
        item=item[keep].astype(np.int64),
        rating=rating[keep].astype(np.float32),
        ts=None,
        splits={"official": index[keep].astype(np.int8)},
        where=lambda r: f"{data_label}, row {int(np.flatnonzero(keep)[r])}",
    )
    return Parsed(chunks=iter([chunk]), items=lambda: read_movies_dat(source, "latin-1"), meta={"removed_rows": int((~keep).sum())})


SPECS = [
    DatasetSpec(
        name="infae",
        title="ML-1M as split by the ∞-AE / Distill-CF authors",
        urls=(),
        read=_read,
        rating_range=(1, 5),
        rating_step=1,
        expected=(6040, 3706, 1_000_209),
        official_splits=("official",),
        default_split="official",
        how_to_get="the authors' preprocessed total_data.hdf5 and index.npz (see ../shared/datasets/README.md)",
    )
]
