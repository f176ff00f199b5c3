"""Benchmark harness: each case runs in a fresh process (so its peak RSS is its own), a warm-up
run first, then ``repeats`` timed runs; the table reports the median, min and max, the rate,
peak RSS, and the ratio to the case's baseline measured in the same run on the same data.

A case's function returns ``{"seconds": ..., "units": ..., **extra}`` where ``units`` is the
amount of work (rows, bytes, samples) behind the rate; extra figures (e.g. per-worker RSS of a
Ray job) are carried into the JSON.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from distrec.resources import peak_rss_mb, reset_peak_rss

__all__ = ["Case", "Result", "run_cases", "markdown_table", "machine"]


@dataclass
class Case:
    suite: str
    name: str
    fn: Callable[..., dict[str, Any]]  # importable (runs in a spawned process)
    args: tuple = ()
    unit: str = "rows"  # what `units` counts: rows, MB, samples, users
    baseline: str | None = None  # name of the case in the same suite this one is compared with
    repeats: int = 3
    warmup: bool = True


@dataclass
class Result:
    suite: str
    name: str
    unit: str
    baseline: str | None
    seconds: list[float]
    rate: float  # units per second at the median time
    peak_rss_mb: float
    ratio: float | None = None  # this rate ÷ baseline rate (>1: faster than the baseline)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _child(fn: Callable, args: tuple, queue) -> None:
    reset_peak_rss()  # a spawned process starts with the parent's high-water mark (fork, then exec)
    try:
        out = fn(*args)
        out["peak_rss_mb"] = max(peak_rss_mb(), float(out.get("peak_rss_mb", 0)))
        queue.put(("ok", out))
    except BaseException as e:  # report, the parent raises
        import traceback

        queue.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _once(case: Case) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=_child, args=(case.fn, case.args, queue))
    proc.start()
    status, out = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark {case.suite}/{case.name} failed:\n{out}")
    return out


def run_cases(cases: list[Case], log: Callable[[str], None] = print) -> list[Result]:
    results: list[Result] = []
    for case in cases:
        start = time.perf_counter()
        if case.warmup:
            _once(case)
        runs = [_once(case) for _ in range(case.repeats)]
        seconds = [r["seconds"] for r in runs]
        median_run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        extra = {k: v for k, v in median_run.items() if k not in ("seconds", "units", "peak_rss_mb")}
        result = Result(
            suite=case.suite,
            name=case.name,
            unit=case.unit,
            baseline=case.baseline,
            seconds=seconds,
            rate=median_run["units"] / max(statistics.median(seconds), 1e-12),
            peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
            extra=extra,
        )
        results.append(result)
        log(
            f"  {case.suite}/{case.name}: {result.median:.2f} s, {_fmt(result.rate)} {case.unit}/s "
            f"({time.perf_counter() - start:.0f} s with warm-up and repeats)"
        )
    by_name = {(r.suite, r.name): r for r in results}
    for r in results:
        base = by_name.get((r.suite, r.baseline)) if r.baseline else None
        if base is not None:
            r.ratio = r.rate / base.rate
    return results


def _fmt(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.2f}{suffix}"
    return f"{x:.2f}"


def markdown_table(results: list[Result]) -> str:
    lines = [
        "| suite | case | median s | min–max s | rate | peak RSS MB | vs baseline |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}× {r.baseline}" if r.ratio is not None else "(baseline)" if _is_baseline(r, results) else ""
        lines.append(
            f"| {r.suite} | {r.name} | {r.median:.2f} | {min(r.seconds):.2f}–{max(r.seconds):.2f} | "
            f"{_fmt(r.rate)} {r.unit}/s | {r.peak_rss_mb:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def _is_baseline(r: Result, results: list[Result]) -> bool:
    return any(o.baseline == r.name and o.suite == r.suite for o in results)


def machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def to_json(results: list[Result], meta: dict[str, Any]) -> str:
    return json.dumps({"machine": machine(), **meta, "results": [asdict(r) | {"median_s": r.median} for r in results]}, indent=1)
