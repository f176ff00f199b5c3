"""Split specs: an official split with a validation part carved from its training rows, or with
some users held out of training (their ratings become profile rows)."""

from __future__ import annotations

import numpy as np
import pytest

from distrec.data.dataset import InteractionDataset
from distrec.data.schema import PROFILE, TEST, TRAIN, VAL
from distrec.data.splits import compute_split, parse_split, row_wise_split
from distrec.errors import DataError
from tests.data.test_movielens_parser import write_ml100k

FOLDS = ("u1", "u2")


def test_official_validation_moves_only_training_rows():
    spec = parse_split("u1:0.05", FOLDS)
    assert (spec.kind, spec.name, spec.base, spec.text) == ("official-val", "u1_val", "u1", "u1:0.05")
    base = np.where(np.arange(20_000) % 5 == 0, TEST, TRAIN).astype(np.int8)
    user = np.zeros(len(base), dtype=np.int64)
    codes = compute_split(spec, user, None, seed=3, base=base)
    assert np.array_equal(codes == TEST, base == TEST)  # test untouched
    moved = (base == TRAIN) & (codes == VAL)
    assert np.array_equal(codes == VAL, moved)
    assert 0.04 < moved.sum() / (base == TRAIN).sum() < 0.06
    assert np.array_equal(codes, compute_split(spec, user, None, seed=3, base=base))  # seeded
    assert not np.array_equal(codes, compute_split(spec, user, None, seed=4, base=base))


def test_holdout_moves_every_training_row_of_the_chosen_users_to_profile():
    spec = parse_split("u1:holdout=0.2", FOLDS)
    assert (spec.kind, spec.name, spec.base, spec.text) == ("official-holdout", "u1_holdout", "u1", "u1:holdout=0.2")
    rng = np.random.default_rng(0)
    user = rng.integers(0, 500, 20_000)
    base = np.where(rng.random(len(user)) < 0.2, TEST, TRAIN).astype(np.int8)
    codes = compute_split(spec, user, None, seed=3, base=base)
    assert np.array_equal(codes == TEST, base == TEST)  # test untouched
    held = np.unique(user[codes == PROFILE])
    assert 0.15 < len(held) / 500 < 0.25
    of_held = np.isin(user, held)
    assert np.array_equal(codes == PROFILE, of_held & (base == TRAIN))  # all their training rows, no one else's
    assert not (of_held & (codes == TRAIN)).any()


@pytest.mark.parametrize("text", ["random:0.7/0.2/0.1", "u1:0.05"])
def test_row_wise_splits_drawn_chunk_by_chunk_equal_one_draw(text):
    """prepare draws these in its first pass, chunk by chunk: the codes must not depend on the chunking."""
    spec = parse_split(text, FOLDS)
    base = np.where(np.arange(10_000) % 4 == 0, TEST, TRAIN).astype(np.int8)
    whole = compute_split(spec, np.zeros(len(base), dtype=np.int64), None, seed=3, base=base)
    draw = row_wise_split(spec, 3)
    cuts = [0, 1, 2500, 2501, 7000, 10_000]
    pieces = [draw(b - a, base[a:b]) for a, b in zip(cuts, cuts[1:])]
    assert np.array_equal(np.concatenate(pieces), whole)
    assert set(np.unique(whole)) == ({TRAIN, VAL, TEST})


def _reference_per_user(user, ts, spec):
    """The per-user splits written the slow, obvious way: a loop over users."""
    codes = np.full(len(user), TRAIN, dtype=np.int8)
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        n = len(rows)
        if spec.kind == "leave-last-out":
            rows = rows[np.argsort(ts[rows], kind="stable")]  # ties: file order
            if n >= 2:
                codes[rows[-1]] = TEST
            if n >= 3:
                codes[rows[-2]] = VAL
            continue
        _, val_r, test_r = spec.ratios
        n_test = max(1, int(np.floor(n * test_r + 0.5)))
        n_val = min(int(np.floor(n * val_r + 0.5)), max(n - n_test - 1, 0))
        n_test = min(n_test, max(n - 1, 0))
        codes[rows] = np.sort(np.r_[[TRAIN] * (n - n_test - n_val), [VAL] * n_val, [TEST] * n_test])  # counts only
    return codes


@pytest.mark.parametrize("text", ["user-ratio:0.8/0.1/0.1", "user-ratio:0.5/0.2/0.3", "leave-last-out"])
def test_per_user_splits_match_a_loop_over_users(text):
    """Each user's exact part sizes (and, for leave-last-out, which rows) as the loop decides
    them; user-ratio's choice of rows is seeded and differs between users of equal size."""
    spec = parse_split(text, FOLDS)
    rng = np.random.default_rng(1)
    user = rng.permutation(np.repeat(np.arange(300), rng.integers(1, 40, 300)))
    ts = rng.integers(0, 50, len(user))  # many ties
    codes = compute_split(spec, user, ts, seed=5)
    want = _reference_per_user(user, ts, spec)
    if spec.kind == "leave-last-out":
        assert np.array_equal(codes, want)
        return
    for part in (TRAIN, VAL, TEST):
        assert np.array_equal(np.bincount(user[codes == part], minlength=300), np.bincount(user[want == part], minlength=300))
    assert np.array_equal(codes, compute_split(spec, user, ts, seed=5))
    assert not np.array_equal(codes, compute_split(spec, user, ts, seed=6))
    tail = [(codes[user == u][-1] == TEST) for u in range(300) if (user == u).sum() >= 10]
    assert 0.02 < np.mean(tail) < 0.4  # test rows are drawn at random, not the file's last ones


@pytest.mark.parametrize("text", ["u1:0", "u1:1", "u1:1.5", "u1:-0.1", "u1:five", "u1:0.1/0.1", "u1:holdout=1", "u1:holdout="])
def test_bad_validation_fraction_names_the_spec(text):
    with pytest.raises(DataError) as info:
        parse_split(text, FOLDS)
    assert f"split {text!r}" in str(info.value) and "between 0 and 1" in str(info.value)


def test_prepare_records_the_official_split_beside_its_validation_variant(tmp_path, prepare):
    got = prepare("ml-100k", write_ml100k(tmp_path / "ml-100k"), splits=["u1", "u1:0.5"])
    u1, carved = got.column("split_u1"), got.column("split_u1_val")
    assert u1 == [TRAIN, TRAIN, TEST, TRAIN, TEST]
    assert [c for c, b in zip(carved, u1) if b == TEST] == [TEST, TEST]
    assert set(c for c, b in zip(carved, u1) if b == TRAIN) <= {TRAIN, VAL}
    counts = got.summary["splits"]["u1_val"]
    assert counts["spec"] == "u1:0.5" and counts["counts"]["test"] == 2 and got.summary["default_split"] == "u1"
    dataset = InteractionDataset(got.directory.uri)
    assert dataset.resolve_split("u1:0.5") == "u1_val" == dataset.resolve_split("u1_val")
    val = dataset.read(split="u1:0.5", parts=["val"], rank=0, world=1)
    assert len(val.rating) == counts["counts"]["val"]


def test_prepare_records_a_holdout_split_whose_profile_part_reads_back(tmp_path, prepare):
    got = prepare("ml-100k", write_ml100k(tmp_path / "ml-100k"), splits=["u1", "u1:holdout=0.5"], seed=1)
    held = got.column("split_u1_holdout")
    assert PROFILE in held and "profile" in got.summary["splits"]["u1_holdout"]["counts"]
    dataset = InteractionDataset(got.directory.uri)
    profile = dataset.read(split="u1_holdout", parts=["profile"], rank=0, world=1)
    train = dataset.read(split="u1_holdout", parts=["train"], rank=0, world=1)
    assert len(profile.rating) == held.count(PROFILE) and not set(profile.user) & set(train.user)


def test_validation_variant_alone_needs_no_official_column(tmp_path, fails, prepare):
    root = write_ml100k(tmp_path / "ml-100k")
    got = prepare("ml-100k", root, splits=["u1:0.5"])
    assert "split_u1" not in got.rows.column_names and got.summary["default_split"] == "u1_val"
    assert "each split kind may be recorded once" in fails("ml-100k", root, splits=["u1:0.1", "u1:0.2"])
