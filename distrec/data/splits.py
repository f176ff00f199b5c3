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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distrec.data.schema import DROPPED, PROFILE, TEST, TRAIN, VAL
from distrec.errors import DataError

__all__ = [
    "SplitSpec",
    "parse_split",
    "compute_split",
    "row_wise_split",
    "split_counts",
    "pair_keys",
    "find_keys",
    "COMPUTED",
    "ROW_WISE",
]

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
                kind="official-holdout",
                name=f"{kind}_holdout",
                ratios=(fraction,),
                text=f"{kind}:holdout={fraction:g}",
                base=kind,
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
    rng = _rng(seed)
    if spec.kind in ROW_WISE:
        return _row_codes(spec, rng, n, base)
    if spec.kind == "official-holdout":
        assert base is not None and len(base) == n, "official-holdout needs the base split's codes"
        (fraction,) = spec.ratios
        held = rng.random(int(user.max()) + 1 if n else 0) < fraction  # [U]: one draw per user
        return np.where(held[user] & ((base == TRAIN) | (base == VAL)), PROFILE, base).astype(np.int8)
    if spec.kind == "temporal":
        rank = _time_rank(spec, ts)
        train, val = spec.ratios
        return np.where(rank < train * n, TRAIN, np.where(rank < (train + val) * n, VAL, TEST)).astype(np.int8)
    if spec.kind in ("user-ratio", "leave-last-out") and n > 1 << 32:  # _per_user packs a row's draw into 32 bits
        raise DataError(f"split {spec.text!r} takes at most {1 << 32:,} ratings, got {n:,}")
    if spec.kind == "user-ratio":
        return _per_user(user, _scramble(n, rng), partial(_ratio_parts, spec.ratios))
    if spec.kind == "leave-last-out":
        return _per_user(user, _time_rank(spec, ts), _last_parts)
    raise ValueError(f"split {spec.text!r} is decided by the parser, not computed")


def _time_rank(spec: SplitSpec, ts: np.ndarray | None) -> np.ndarray:
    """Each row's position in time order [N], equal times in file order."""
    if ts is None:
        raise DataError(f"split {spec.text!r} needs timestamps and this dataset has none")
    rank = np.empty(len(ts), dtype=np.int64)
    rank[np.argsort(ts, kind="stable")] = np.arange(len(ts))
    return rank


ROW_WISE = ("random", "official-val")  # splits whose codes need only the row itself


def row_wise_split(spec: SplitSpec, seed: int) -> Callable[[int, np.ndarray | None], np.ndarray]:
    """For a ``ROW_WISE`` split, ``codes(rows, base)`` to call chunk by chunk in file order:
    together the chunks get the codes ``compute_split`` gives all rows at once (the generator
    draws the same numbers in pieces), so prepare writes them in its first pass."""
    assert spec.kind in ROW_WISE, spec
    rng = _rng(seed)
    return lambda n, base: _row_codes(spec, rng, n, base)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 7919])


def _row_codes(spec: SplitSpec, rng: np.random.Generator, n: int, base: np.ndarray | None) -> np.ndarray:
    u = rng.random(n)
    if spec.kind == "official-val":
        assert base is not None and len(base) == n, "official-val needs the base split's codes"
        (fraction,) = spec.ratios
        return np.where((base == TRAIN) & (u < fraction), np.int8(VAL), base).astype(np.int8, copy=False)
    train, val, _ = spec.ratios
    codes = np.full(n, TRAIN, dtype=np.int8)
    codes[u >= train] = VAL
    codes[u >= train + val] = TEST
    return codes


def _ratio_parts(ratios: tuple[float, ...], count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``user-ratio``: each user's validation and test sizes [U] for their row counts [U]."""
    _, val_r, test_r = ratios
    n_test = np.maximum(1, np.floor(count * test_r + 0.5)).astype(np.int64)
    n_val = np.floor(count * val_r + 0.5).astype(np.int64)
    # Keep at least one training rating: small users give up validation first, then test.
    n_val = np.minimum(n_val, np.maximum(count - n_test - 1, 0))
    n_test = np.minimum(n_test, np.maximum(count - 1, 0))
    return n_val, n_test


def _last_parts(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``leave-last-out``: the latest rating is test (2+ ratings), the one before validation (3+)."""
    return (count >= 3).astype(np.int64), (count >= 2).astype(np.int64)


def _per_user(user: np.ndarray, draw: np.ndarray, parts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each user's test rows are their ``n_test`` rows of largest ``draw`` (distinct values in
    [0, 2**32), [N]), validation the ``n_val`` below those; ``parts(count)`` gives ``(n_val,
    n_test)`` [U] for the users' row counts [U].

    One sort of the 64-bit keys (user, draw) gives each user's row count and thresholds; the rows
    are then compared with their user's thresholds in file order, with no argsort and no gather
    through a permutation (on 25M rows: 2 s, where a lexsort grouping took 16 s)."""
    key = user.astype(np.int64) << 32
    key |= draw
    ranked = np.sort(key)
    users = int(ranked[-1] >> 32) + 1 if len(ranked) else 0
    end = np.searchsorted(ranked, np.arange(1, users + 1, dtype=np.int64) << 32)  # one past each user's last key
    count = np.diff(end, prepend=0)  # (np.bincount is slower than the sort)
    n_val, n_test = parts(count)
    never = np.iinfo(np.int64).max
    codes = np.full(len(user), TRAIN, dtype=np.int8)
    for code, first in ((VAL, end - n_test - n_val), (TEST, end - n_test)):
        threshold = np.where(end > first, ranked[np.minimum(first, len(user) - 1)], never)  # [U]
        codes[key >= threshold[user]] = code
    return codes


def _scramble(n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded pseudo-random permutation of [0, 2**32) applied to the row numbers 0..n-1: distinct
    draws [N] (uint32 in int64) as random as a shuffle for choosing rows, at the cost of a few
    vector operations. Each step (xor with a constant, xor with a shift, multiplication by an odd
    number mod 2**32) is a bijection; the multipliers are those of Wellons' lowbias32 mixer."""
    x = np.arange(n, dtype=np.uint32)
    for salt in rng.integers(0, 1 << 32, size=2, dtype=np.uint32):
        x ^= salt
        x ^= x >> 16
        x *= np.uint32(0x7FEB352D)
        x ^= x >> 15
        x *= np.uint32(0x846CA68B)
        x ^= x >> 16
    return x.astype(np.int64)


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
