"""Wall time and peak memory, measured the same way by every job and benchmark."""

from __future__ import annotations

import resource
import time

__all__ = ["peak_rss_mb", "Stopwatch"]


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children) in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
