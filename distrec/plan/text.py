"""A plan (``distrec.plan.capacity``) as the text ``jobs/plan.py`` prints."""

from __future__ import annotations

from typing import Any

from distrec.plan.cluster import GB

__all__ = ["plan_text", "duration"]


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _ranges(ranks: list[int]) -> str:
    """[0, 1, 2, 5] → "0-2,5"."""
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(f"{start}" if start == r else f"{start}-{r}")
            start = None
    return ",".join(out)


def plan_text(plan: dict[str, Any]) -> str:
    c, s, m, b, caps = plan["cluster"], plan["shape"], plan["model"], plan["batch"], plan["caps"]
    lines = [
        f"plan for {c['nodes']} node(s) × {c['gpus_per_node']} GPU(s) = {c['gpus']} GPU(s), compute device cuda: "
        f"{c['hbm_gb_per_gpu']:g} GiB HBM and {c['ddr_gb_per_gpu']:g} GiB host memory per GPU, "
        f"{c['intra_gbps']:g} GB/s within a node, {c['inter_gbps']:g} GB/s between nodes",
        f"shape: {s['users']:,} users × {s['items']:,} items"
        + (f", {s['ratings']:,} ratings" if s["ratings"] else "")
        + f" ({s['source']}); "
        f"{m['name']} dim {m['dim']}, fused {m['sparse_optimizer']}; batch {b['per_gpu']:,} per GPU, {b['global']:,} global",
        "",
        f"{'table':<12} {'rows':>15} {'width':>5}  {'sharding':<15} {'kernel':<18} {'GPUs':>10} "
        f"{'HBM GiB':>9} {'DDR GiB':>9} {'est ms':>8}",
    ]
    for t in plan["tables"]:
        lines.append(
            f"{t['name']:<12} {t['rows']:>15,} {t['width']:>5}  {t['sharding_type']:<15} {t['compute_kernel']:<18} "
            f"{_ranges(t['ranks']):>10} {t['hbm_bytes'] / GB:>9.2f} {t['ddr_bytes'] / GB:>9.2f} {t['step_ms']:>8.3f}"
        )
    lines += [
        "",
        f"per GPU (of {caps['hbm_bytes_for_tables'] / GB:.1f} GiB HBM for tables and "
        f"{caps['ddr_bytes_per_gpu'] / GB:.1f} GiB host memory):",
    ]
    groups: list[tuple[tuple, list[int]]] = []
    for r in plan["ranks"]:
        key = (round(r["hbm_bytes"] / GB, 2), round(r["ddr_bytes"] / GB, 2), round(r["step_ms"], 3))
        if groups and groups[-1][0] == key and groups[-1][1][-1] == r["rank"] - 1:
            groups[-1][1].append(r["rank"])
        else:
            groups.append((key, [r["rank"]]))
    for (hbm, ddr, ms), ranks in groups:
        lines.append(f"  GPU {_ranges(ranks):<10} HBM {hbm:>8.2f} GiB   DDR {ddr:>8.2f} GiB   est {ms:>8.3f} ms")
    e = plan["estimate"]
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in e["busiest_rank_ms"].items() if v)
    line = (
        f"estimate (TorchRec's planner model, not a measurement): embedding step {e['step_ms']:.3f} ms "
        f"on GPU {e['busiest_rank']} ({parts})"
    )
    if "epoch_s" in e:
        line += f"; {e['steps_per_epoch']:,} steps an epoch at {b['global']:,} a step ≈ {duration(e['epoch_s'])}"
    lines += ["", line]
    d = plan["data"]
    if "shards" in d:
        lines.append(
            f"data: {d['ratings']:,} ratings in {d['shards']:,} shard(s); jobs/prepare.py on {d['text_bytes'] / 1e9:,.1f} GB of "
            f"Netflix-format text at {d['prepare_mib_s']:g} MiB/s (measured, one process) ≈ {duration(d['prepare_s'])}"
        )
    return "\n".join(lines)
