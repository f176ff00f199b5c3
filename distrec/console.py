"""The job's console: quiet mode, whether someone watches a terminal, and the one progress bar
helper (``progress_bar``): a live bar on a person's terminal, nothing in a log file.

A bar is drawn only where someone watches it: when the job's console (stdout and stderr) is a
terminal and ``DISTREC_QUIET`` (a job's ``--quiet``) is off. In a file a bar is noise: tqdm's
carriage-return redraws pile up on one line, and Ray forwards a worker's output line by line,
each with its "(pid=...)" prefix. There the loops' own summary line per epoch (runtime/epochs.py: log_epoch)
is the whole record.

A Ray worker's stdout is never a terminal (Ray pipes it to the driver), so the driver tells its
workers what its own console is: ``console_for_workers()`` gives the environment
(``DISTREC_TERMINAL``) run_workers forwards. In a worker the bar is Ray's ``tqdm_ray``, which
the driver draws as one bar line; bars are asked for on rank 0 only (``enabled``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

__all__ = ["progress_bar", "quiet", "set_quiet", "terminal", "console_for_workers"]

TERMINAL_ENV = "DISTREC_TERMINAL"


def quiet() -> bool:
    return os.environ.get("DISTREC_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    """Also reaches Ray workers started afterwards (they inherit the environment)."""
    os.environ["DISTREC_QUIET"] = "1" if value else "0"


def terminal() -> bool:
    """Whether this job's console is a terminal: the driver's word where it gave one
    (``DISTREC_TERMINAL``, in Ray workers), else whether stdout and stderr both are TTYs."""
    said = os.environ.get(TERMINAL_ENV)
    if said is not None:
        return said == "1"
    return sys.stdout.isatty() and sys.stderr.isatty()


def console_for_workers() -> dict[str, str]:
    """The environment a driver gives its Ray workers so that their bars follow its console.

    Where the console is not a terminal it also turns off the ANSI colours of Ray's "(pid=...)"
    prefixes on the workers' lines (``RAY_COLOR_PREFIX=0``, read by this driver when it prints
    them), unless the user set that variable.
    """
    on_terminal = terminal()
    if not on_terminal:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    return {TERMINAL_ENV: "1" if on_terminal else "0"}


class _Off:
    def update(self, n: float = 1) -> None:
        pass


def _in_ray_worker() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


@contextmanager
def progress_bar(*, total: float | None, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[Any]:
    """A bar with ``update(n)``; a silent one with ``enabled=False`` (say, on every rank but 0),
    under DISTREC_QUIET, and when the console is not a terminal."""
    if quiet() or not enabled or not terminal():
        yield _Off()
        return
    if _in_ray_worker():
        from ray.experimental.tqdm_ray import tqdm as tqdm_ray

        bar = tqdm_ray(desc=desc, total=total, unit=unit)
    else:
        bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit in ("B", "rows"),
            unit_divisor=1024 if unit == "B" else 1000,
            file=sys.stderr,
            mininterval=0.5,
            dynamic_ncols=True,
        )
    try:
        yield bar
    finally:
        bar.close()
