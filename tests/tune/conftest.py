"""Sweeps in these tests sign Tune's state with a key of their own, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def distrec_home(tmp_path, monkeypatch):
    """``DISTREC_HOME`` (where the Tune-state HMAC key lives) in the test's own temporary folder;
    jobs/tune.py children inherit it."""
    home = tmp_path / "distrec-home"
    monkeypatch.setenv("DISTREC_HOME", str(home))
    return home
