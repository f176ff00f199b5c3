"""The repeated-pair check (packed sort, and its argsort fallback) against a plain Python reference."""

from __future__ import annotations

import numpy as np
import pytest

from distrec.data.duplicates import PairCheck
from distrec.data.idmap import IdMap
from distrec.errors import DataError


def _ids(n: int) -> IdMap:
    ids = IdMap()
    ids.encode(np.arange(100, 100 + n))  # raw id = dense index + 100
    return ids


def _first_repeat_reference(user: np.ndarray, item: np.ndarray) -> tuple[int, int] | None:
    seen: dict[tuple[int, int], int] = {}
    for row, pair in enumerate(zip(user.tolist(), item.tolist())):
        if pair in seen:
            return seen[pair], row
        seen[pair] = row
    return None


@pytest.mark.parametrize("key_bits", [63, 8], ids=["packed", "argsort"])  # 8 bits are too few to pack: the fallback
@pytest.mark.parametrize("seed", range(8))
def test_pair_check_names_the_first_repeat_in_file_order(seed, key_bits):
    rng = np.random.default_rng(seed)
    users, items, n = 40, 30, int(rng.integers(1, 200))
    user, item = rng.integers(0, users, n), rng.integers(0, items, n)
    check = PairCheck(key_bits=key_bits)
    for lo in range(0, n, 37):  # in chunks, as prepare adds them
        check.add(user[lo : lo + 37], item[lo : lo + 37], lambda r, lo=lo: f"f, line {lo + r + 1}")
    expected = _first_repeat_reference(user, item)
    if expected is None:
        check.check(_ids(users), _ids(items))
        return
    earlier, later = expected
    with pytest.raises(DataError) as info:
        check.check(_ids(users), _ids(items))
    assert str(info.value).startswith(
        f"f, line {later + 1}: user {user[later] + 100}, item {item[later] + 100} is rated again (first at f, line {earlier + 1})"
    )


def test_distinct_pairs_pass():
    user, item = np.repeat(np.arange(50), 20), np.tile(np.arange(20), 50)  # every pair once
    check = PairCheck()
    check.add(user, item, None)
    check.check(_ids(50), _ids(20))
