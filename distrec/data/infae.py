"""Datasets in the format of "Infinite Recommendation Networks" (∞-AE, Distill-CF), as its authors
ship them; their ML-1M split is the one the paper's tables use.

``total_data.hdf5`` holds datasets ``user``, ``item`` (raw item id) and ``rating``; ``index.npz``
key ``data`` gives each row's part: 0 train, 1 validation, 2 test, -1 removed. Removed rows are
dropped before users and items are indexed, and the split is recorded as ``official``. A
``movies.dat`` placed beside them supplies titles and genres. The authors' script writes the
users as their own dense re-indexing (``user`` is 0..U-1, every id holding rows) and, in the
Distill-CF version, a ``data_stats.json`` with the counts that remain after removal.

Any such file is checked for what the format itself promises: one part label per row, each
0, 1, 2 or -1, the users' dense ids, and the counts of ``data_stats.json`` where it is present.
Official counts are checked only where the release is recognised: ML-1M, whose file holds all
1,000,209 ratings (``--no-verify`` skips that comparison, not the others). The summary's
``verified`` lists what was checked.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from distrec.data.hdf5 import open_hdf5
from distrec.data.movielens import read_movies_dat
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions
from distrec.data.schema import RatingChunk
from distrec.data.source import Source
from distrec.data.splits import split_counts
from distrec.errors import DataError

__all__ = ["SPECS", "ML_1M"]

ML_1M = {"users": 6040, "items": 3706, "ratings": 1_000_209}  # the release, every rating in the file
STATS = "data_stats.json"


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
    checks = [f"{index_label}: one part label per row ({len(index):,}), each 0, 1, 2 or -1"]
    checks.append(_check_user_ids(user, data_label))
    keep = index >= 0
    if source.has(STATS):
        checks.append(_check_stats(source, user[keep], item[keep], index[keep]))
    checks.append(_check_release(user, item, options.verify))
    chunk = RatingChunk(
        user=user[keep].astype(np.int64),
        item=item[keep].astype(np.int64),
        rating=rating[keep].astype(np.float32),
        ts=None,
        splits={"official": index[keep].astype(np.int8)},
        where=lambda r: f"{data_label}, row {int(np.flatnonzero(keep)[r])}",
    )
    return Parsed(
        chunks=iter([chunk]),
        expected_rows=len(chunk),
        items=lambda: read_movies_dat(source, "latin-1"),
        meta={"removed_rows": int((~keep).sum())},
        checks=checks,
    )


def _check_user_ids(user: np.ndarray, label: str) -> str:
    """The authors' script numbers users 0..U-1, each with rows (removed ones included)."""
    ids = np.unique(user)
    if len(ids) and (ids[0] != 0 or ids[-1] != len(ids) - 1):
        missing = int(np.flatnonzero(ids != np.arange(len(ids)))[0])  # the first id 0, 1, ... that has no rows
        raise DataError(
            f"{label}: user ids are not the authors' dense re-indexing: they run {int(ids[0])}..{int(ids[-1])} over "
            f"{len(ids):,} users, and user {missing} has no rows"
        )
    return f"{label}: user ids are the authors' re-indexing, 0..{len(ids) - 1:,} with no gaps"


def _check_stats(source: Source, user: np.ndarray, item: np.ndarray, part: np.ndarray) -> str:
    """The counts of the authors' ``data_stats.json`` against the rows that remain (part >= 0)."""
    label = source.label(STATS)
    parts = split_counts(part.astype(np.int8))
    found = {
        "num_users": len(np.unique(user)),
        "num_items": len(np.unique(item)),
        "num_train_interactions": parts["train"],
        "num_val": parts["val"],
        "num_test": parts["test"],
    }
    with source.open(STATS) as f:
        try:
            stats = json.load(f)
            differ = {k: (stats[k], v) for k, v in found.items() if stats[k] != v}
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{label}: expected the authors' JSON object with {sorted(found)} ({type(e).__name__}: {e})"
            ) from None
    if differ:
        shown = ", ".join(f"{k} {said:,} (the rows hold {got:,})" for k, (said, got) in differ.items())
        raise DataError(f"{label}: counts disagree with total_data.hdf5 and index.npz after removal: {shown}")
    return f"{label}: users, items and train/validation/test counts agree with the rows kept"


def _check_release(user: np.ndarray, item: np.ndarray, verify: bool) -> str:
    """ML-1M is recognised by its rating count; its users and items must then be the release's."""
    if len(user) != ML_1M["ratings"]:
        return (
            f"official counts not checked: {len(user):,} ratings is no release this parser knows (ML-1M has {ML_1M['ratings']:,})"
        )
    if not verify:
        return "ML-1M recognised by its rating count; its official counts not checked (--no-verify)"
    found = {"users": len(np.unique(user)), "items": len(np.unique(item)), "ratings": len(user)}
    if found != ML_1M:
        raise DataError(
            f"infae: {found['ratings']:,} ratings as in ML-1M, but {found['users']:,} users and {found['items']:,} items; the "
            f"release has {ML_1M['users']:,} and {ML_1M['items']:,}. The source is another version or damaged; pass "
            "--no-verify to accept it as it is"
        )
    return (
        f"ML-1M: counts match the official release ({ML_1M['users']:,} users, {ML_1M['items']:,} items, "
        f"{ML_1M['ratings']:,} ratings)"
    )


SPECS = [
    DatasetSpec(
        name="infae",
        title="∞-AE / Distill-CF format (ML-1M split and others)",
        urls=(),
        read=_read,
        rating_range=(1, 5),
        rating_step=1,
        expected=None,  # any dataset in this format; ML-1M's counts are checked when it is recognised
        official_splits=("official",),
        default_split="official",
        how_to_get="the authors' preprocessed total_data.hdf5 and index.npz (see ../shared/datasets/README.md)",
    )
]
