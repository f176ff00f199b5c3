"""The one progress helper: a tqdm bar with rate and ETA on stderr.

``DISTREC_QUIET=1`` (or ``--quiet`` on a job) switches bars off for CI and log files. When
stderr is not a terminal the bar redraws at most every 30 s so logs stay short.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

__all__ = ["progress", "quiet", "set_quiet"]


def quiet() -> bool:
    return os.environ.get("DISTREC_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    """Also reaches Ray workers started afterwards (they inherit the environment)."""
    os.environ["DISTREC_QUIET"] = "1" if value else "0"


@contextmanager
def progress(*, total: float | None, desc: str, unit: str = "it") -> Iterator[tqdm]:
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit in ("B", "rows"),
        unit_divisor=1024 if unit == "B" else 1000,
        disable=quiet(),
        file=sys.stderr,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=True,
        leave=True,
    )
    try:
        yield bar
    finally:
        bar.close()
