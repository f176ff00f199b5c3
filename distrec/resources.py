"""Wall time and memory, measured the same way by every job and benchmark."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["peak_rss_mb", "reset_peak_rss", "available_memory_bytes", "Stopwatch", "timed"]


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children) in MiB.

    For this process: Linux's VmHWM, which ``reset_peak_rss`` resets and which a freshly
    started (spawned) process begins anew; ``getrusage`` keeps the high-water mark of the
    process it was forked from across ``exec``, so it is the fallback only."""
    if not children:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0  # kB
        except OSError:
            pass
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement from the current RSS (Linux ``clear_refs`` 5), so one
    process can measure several things in turn; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_memory_bytes() -> int:
    """Memory this machine can give a new allocation now (MemAvailable; else all physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


@contextmanager
def timed(totals: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``totals[key]`` (a run's phases: where its time goes)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
