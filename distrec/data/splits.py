"""Train/validation/test splits, computed once at preparation and stored as int8 columns.

Split specs (``--split`` on prepare, recorded in the manifest, chosen by ``data.split=NAME``):

- ``random:0.8/0.1/0.1`` (name ``random``): each rating independently, global ratios.
- ``user-ratio:0.8/0.1/0.1`` (name ``user_ratio``): per user, a random 80/10/10 of their ratings,
  at least one test rating per user (the ∞-AE / Distill-CF protocol).
- ``leave-last-out`` (name ``leave_last_out``): per user, the latest rating is test and the one
  before it validation (ties broken by file order); users with one rating keep it in train.
- ``temporal:0.8/0.1`` (name ``temporal``): global time cut; the earliest 80 % of ratings train,
  the next 10 % validation, the rest test.
- the dataset's own split by name (``u1``…``u5``, ``ua``, ``ub`` for ML-100K, ``probe`` for
  Netflix, ``official`` for Douban and the ∞-AE index), decided by the parser.
- ``u1:0.05`` (name ``u1_val``): the official split with a fraction of its training ratings
  (each independently, seeded) moved to validation; its test part is untouched. Official splits
  such as u1 have no validation rows, so this is where hyper-parameters are chosen honestly.
- ``u1:holdout=0.1`` (name ``u1_holdout``): the official split with a fraction of the users
  (each independently, seeded) held out of training entirely, for cold-start evaluation: their
  training and validation ratings get the code PROFILE (what is known about them at inference
  time), their test ratings stay test. Other users' rows keep their official codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distrec.data.schema import DROPPED, PROFILE, TEST, TRAIN, VAL
from distrec.storage.manifest import DataError

__all__ = ["SplitSpec", "parse_split", "compute_split", "split_counts", "pair_keys", "find_keys", "COMPUTED"]

COMPUTED = ("random", "user-ratio", "leave-last-out", "temporal")


@dataclass(frozen=True)
class SplitSpec:
    kind: str  # one of COMPUTED, "official", "official-val" (an official split plus validation)
    # or "official-holdout" (an official split with some users held out of training)
    name: str  # column suffix and the name used by data.split
    ratios: tuple[float, ...] = ()
    text: str = ""
    base: str = ""  # the official split an "official-val" or "official-holdout" split builds on


def parse_split(text: str, official: tuple[str, ...]) -> SplitSpec:
    """Parse a ``--split`` spec; ``official`` lists the dataset's own split names."""
    kind, _, args = text.strip().partition(":")
    if kind in official:
        if not args:
            return SplitSpec(kind="official", name=kind, text=kind)
        holdout = args.startswith("holdout=")
        try:
            fraction = float(args.removeprefix("holdout="))
        except ValueError:
            fraction = math.nan
        if not 0 < fraction < 1:
            raise DataError(
                f"split {text!r}: after the official split {kind!r} give the fraction of its training "
                f"ratings to hold out for validation (e.g. {kind}:0.05), or the fraction of users to hold "
                f"out of training (e.g. {kind}:holdout=0.1), a number between 0 and 1"
            )
        if holdout:
            return SplitSpec(
                kind="official-holdout", name=f"{kind}_holdout", ratios=(fraction,), text=f"{kind}:holdout={fraction:g}", base=kind
            )
        return SplitSpec(kind="official-val", name=f"{kind}_val", ratios=(fraction,), text=f"{kind}:{fraction:g}", base=kind)
    if kind not in COMPUTED:
        choices = ", ".join(list(COMPUTED) + list(official))
        raise DataError(f"unknown split {text!r}; choose one of: {choices}")
    defaults = {"random": "0.8/0.1/0.1", "user-ratio": "0.8/0.1/0.1", "temporal": "0.8/0.1", "leave-last-out": ""}
    args = args or defaults[kind]
    try:
        ratios = tuple(float(x) for x in args.split("/")) if args else ()
    except ValueError:
        raise DataError(f"split {text!r}: ratios must be numbers separated by '/'") from None
    want = {"random": 3, "user-ratio": 3, "temporal": 2, "leave-last-out": 0}[kind]
    if len(ratios) != want or any(r < 0 for r in ratios):
        raise DataError(f"split {text!r}: expected {want} non-negative ratios separated by '/'")
    if want == 3 and abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError(f"split {text!r}: train/val/test ratios must sum to 1, got {sum(ratios):g}")
    if want == 2 and sum(ratios) >= 1.0:
        raise DataError(f"split {text!r}: train and val fractions must leave room for test")
    return SplitSpec(kind=kind, name=kind.replace("-", "_"), ratios=ratios, text=f"{kind}:{args}" if args else kind)


def compute_split(
    spec: SplitSpec, user: np.ndarray, ts: np.ndarray | None, *, seed: int, base: np.ndarray | None = None
) -> np.ndarray:
    """int8 codes [N] (TRAIN/VAL/TEST) for rows given their dense ``user`` [N] and ``ts`` [N];
    ``base`` [N]: the codes of the official split ``spec.base`` (for ``official-val`` only)."""
    n = len(user)
    rng = np.random.default_rng([seed, 7919])
    if spec.kind == "official-val":
        assert base is not None and len(base) == n, "official-val needs the base split's codes"
        (fraction,) = spec.ratios
        return np.where((base == TRAIN) & (rng.random(n) < fraction), VAL, base).astype(np.int8)
    if spec.kind == "official-holdout":
        assert base is not None and len(base) == n, "official-holdout needs the base split's codes"
        (fraction,) = spec.ratios
        held = rng.random(int(user.max()) + 1 if n else 0) < fraction  # [U]: one draw per user
        return np.where(held[user] & ((base == TRAIN) | (base == VAL)), PROFILE, base).astype(np.int8)
    if spec.kind == "random":
        u = rng.random(n)
        train, val, _ = spec.ratios
        return np.where(u < train, TRAIN, np.where(u < train + val, VAL, TEST)).astype(np.int8)
    if spec.kind == "temporal":
        if ts is None:
            raise DataError(f"split {spec.text!r} needs timestamps and this dataset has none")
        order = np.argsort(ts, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        train, val = spec.ratios
        return np.where(rank < train * n, TRAIN, np.where(rank < (train + val) * n, VAL, TEST)).astype(np.int8)
    if spec.kind == "user-ratio":
        return _per_user(user, rng.random(n), spec.ratios)
    if spec.kind == "leave-last-out":
        if ts is None:
            raise DataError(f"split {spec.text!r} needs timestamps and this dataset has none")
        return _leave_last_out(user, ts)
    raise ValueError(f"split {spec.text!r} is decided by the parser, not computed")


def _group_rank(user: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its 0-based rank within its user when ordered by ``key`` (then row order), and
    the user's number of rows."""
    order = np.lexsort((np.arange(len(user)), key, user))
    sorted_users = user[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, len(user)])
    rank_sorted = np.arange(len(user)) - np.repeat(starts, sizes)
    rank = np.empty(len(user), dtype=np.int64)
    rank[order] = rank_sorted
    count = np.empty(len(user), dtype=np.int64)
    count[order] = np.repeat(sizes, sizes)
    return rank, count


def _per_user(user: np.ndarray, key: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    _, val_r, test_r = ratios
    rank, count = _group_rank(user, key)
    n_test = np.maximum(1, np.floor(count * test_r + 0.5)).astype(np.int64)
    n_val = np.floor(count * val_r + 0.5).astype(np.int64)
    # Keep at least one training rating: small users give up validation first, then test.
    n_val = np.minimum(n_val, np.maximum(count - n_test - 1, 0))
    n_test = np.minimum(n_test, np.maximum(count - 1, 0))
    codes = np.full(len(user), TRAIN, dtype=np.int8)
    codes[rank >= count - n_test] = TEST
    codes[(rank >= count - n_test - n_val) & (rank < count - n_test)] = VAL
    return codes


def _leave_last_out(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    rank, count = _group_rank(user, ts)
    codes = np.full(len(user), TRAIN, dtype=np.int8)
    codes[(rank == count - 1) & (count >= 2)] = TEST
    codes[(rank == count - 2) & (count >= 3)] = VAL
    return codes


def split_counts(codes: np.ndarray) -> dict[str, int]:
    """Rows per part; ``profile`` only for splits that hold users out."""
    counts = {
        "train": int((codes == TRAIN).sum()),
        "val": int((codes == VAL).sum()),
        "test": int((codes == TEST).sum()),
        "dropped": int((codes == DROPPED).sum()),
    }
    profile = int((codes == PROFILE).sum())
    return counts | ({"profile": profile} if profile else {})


# -- official splits shipped as lists of (user, item) pairs (ML-100K folds, Netflix probe) -------
def pair_keys(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """One int64 key per row [N] for the id pair (major, minor), ordered by major id first;
    raw ids must lie in [0, 2**32)."""
    return major.astype(np.int64, copy=False) * (1 << 32) + minor.astype(np.int64, copy=False)


def find_keys(keys: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``keys`` [N] occur in the sorted array ``sorted_keys``: bool [N], and the index
    in ``sorted_keys`` of each key found (int [hits], in row order).

    Only the run of ``sorted_keys`` between the smallest and largest key is hashed (Arrow's
    ``index_in``): a chunk that covers few major ids then looks up a short run, not the whole set;
    for the Netflix probe that is several times faster than a binary search per row."""
    if not len(keys):
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    lo, hi = np.searchsorted(sorted_keys, [keys.min(), keys.max()])
    found = pc.index_in(pa.array(keys), value_set=pa.array(sorted_keys[lo : hi + 1]))  # null where absent
    hit = found.is_valid().to_numpy(zero_copy_only=False)
    return hit, found.drop_null().to_numpy() + lo
