"""This machine's own limits for MF updates, measured in the same run as the MF cases, so that each
case's updates/s reads as a fraction of what the memory system allows here.

One MF update reads and writes a user row and an item row: 2 rows × 2 × dim × 4 bytes (1 KB at
dim 64). Two limits follow:

- **streaming**: copy bandwidth (bytes read + written a second) ÷ the bytes of an update: what a
  solver reaches when every row it touches is already in cache or streamed in order (perfect
  cache blocking);
- **random**: the rate of gathering rows from random places in a table of the case's size ÷ the 2
  rows of an update: each update's rows fetched from memory, their write-back hitting the cache
  lines just read.

The scatter rate (random ``index_add_``) is reported beside them: an optimizer's write of a
batch's rows is one.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from distrec.bench.harness import Result

__all__ = ["machine_limits", "relate_to_limits", "limits_table"]

LIMITS = "machine-limits"  # the case's name in each suite that has one
_MIN_S = 1.0  # each measurement repeats its step for at least this long
_BATCH = 8192  # rows gathered or scattered per call: the MF cases' batch


def _rate(step, units: float) -> tuple[float, float]:
    """(units a second, seconds measured) of ``step()``, repeated for at least ``_MIN_S``, after one untimed call."""
    step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < _MIN_S or calls < 3:
        step()
        calls += 1
    return calls * units / elapsed, elapsed


def _copy_rate(mb: int) -> float:
    """Bytes read + written a second by one large fp32 ``copy_`` (``mb`` MB each way)."""
    import torch

    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    return _rate(lambda: dst.copy_(src), 2 * src.numel() * 4)[0]


def machine_limits(data: str, dim: int = 64, copy_mb: int = 512) -> dict[str, Any]:
    """Copy bandwidth, and random gather and scatter rates of ``dim``-wide fp32 rows from a table as
    large as ``data``'s user table (the larger of its two), on every core as the MF cases run."""
    import os

    import torch

    from distrec.data.dataset import InteractionDataset

    torch.set_num_threads(os.cpu_count() or 1)
    rows = max(InteractionDataset(data).num_users, _BATCH)
    copy_bytes_s = _copy_rate(copy_mb)
    table = torch.randn(rows, dim)
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(rows, (_BATCH,), generator=gen) for _ in range(64)]
    rows_out = torch.empty(_BATCH, dim)
    turn = itertools.count()

    def gather() -> None:
        torch.index_select(table, 0, ids[next(turn) % len(ids)], out=rows_out)

    def scatter() -> None:
        table.index_add_(0, ids[next(turn) % len(ids)], rows_out)

    gather_rows_s, seconds = _rate(gather, _BATCH)
    scatter_rows_s, _ = _rate(scatter, _BATCH)
    update_bytes = 2 * 2 * dim * 4
    return {
        "seconds": seconds,
        "units": gather_rows_s * seconds,
        "table_rows": rows,
        "dim": dim,
        "copy_gb_s": copy_bytes_s / 1e9,
        "gather_rows_s": gather_rows_s,
        "scatter_rows_s": scatter_rows_s,
        "update_bytes": update_bytes,
        "streaming_updates_s": copy_bytes_s / update_bytes,
        "random_updates_s": gather_rows_s / 2,
    }


def relate_to_limits(results: list[Result]) -> None:
    """Each case counted in samples (one sample: one MF update) gets its rate as a fraction of its
    suite's measured limits, ``of_streaming_limit`` and ``of_random_limit`` in its extra."""
    limits = {r.suite: r.extra for r in results if r.name == LIMITS}
    for r in results:
        if r.unit == "samples" and r.suite in limits:
            r.extra["of_streaming_limit"] = r.rate / limits[r.suite]["streaming_updates_s"]
            r.extra["of_random_limit"] = r.rate / limits[r.suite]["random_updates_s"]


def limits_table(results: list[Result]) -> str:
    """The measured limits and each MF case's updates/s as a fraction of them (after ``relate_to_limits``)."""
    lines = []
    for lim in (r for r in results if r.name == LIMITS):
        e = lim.extra
        lines += [
            f"\n{lim.suite}: this machine's limits at dim {e['dim']} ({e['table_rows']:,}-row table): copy "
            f"{e['copy_gb_s']:.1f} GB/s (read + write), random gather {e['gather_rows_s'] / 1e6:.2f}M rows/s, "
            f"random scatter {e['scatter_rows_s'] / 1e6:.2f}M rows/s; an update moves {e['update_bytes']} bytes: "
            f"streaming limit {e['streaming_updates_s'] / 1e6:.1f}M updates/s, random {e['random_updates_s'] / 1e6:.2f}M",
            "",
            "| case | updates/s | of streaming limit | of random limit |",
            "|---|---:|---:|---:|",
        ]
        for r in results:
            if r.suite == lim.suite and "of_random_limit" in r.extra:
                x = r.extra
                lines.append(f"| {r.name} | {r.rate / 1e6:.2f}M | {x['of_streaming_limit']:.1%} | {x['of_random_limit']:.1%} |")
    return "\n".join(lines)
