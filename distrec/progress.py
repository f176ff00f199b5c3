"""The one progress helper: a bar with rate and ETA.

On the console it is tqdm on stderr; inside a Ray worker it is Ray's ``tqdm_ray``, which the
driver draws as a proper bar instead of interleaved log lines. ``DISTREC_QUIET=1`` (a job's
``--quiet``) switches bars off for CI and log files; when stderr is not a terminal the bar
redraws at most every 30 s so logs stay short.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from tqdm import tqdm

__all__ = ["progress", "quiet", "set_quiet"]


def quiet() -> bool:
    return os.environ.get("DISTREC_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    """Also reaches Ray workers started afterwards (they inherit the environment)."""
    os.environ["DISTREC_QUIET"] = "1" if value else "0"


class _Off:
    def update(self, n: float = 1) -> None:
        pass


def _in_ray_worker() -> bool:
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


@contextmanager
def progress(*, total: float | None, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[Any]:
    """A bar with ``update(n)``; ``enabled=False`` (say, on every rank but 0) gives a silent one."""
    if quiet() or not enabled:
        yield _Off()
        return
    if _in_ray_worker():
        from ray.experimental.tqdm_ray import tqdm as tqdm_ray

        bar = tqdm_ray(desc=desc, total=total, unit=unit)
    else:
        tty = sys.stderr.isatty()
        bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit in ("B", "rows"),
            unit_divisor=1024 if unit == "B" else 1000,
            file=sys.stderr,
            mininterval=0.5 if tty else 30.0,
            dynamic_ncols=True,
        )
    try:
        yield bar
    finally:
        bar.close()
