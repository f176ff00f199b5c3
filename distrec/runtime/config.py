"""The ``ray`` section every Ray job's config shares, and the run name derived from it.

Light on purpose (no Ray import): the job configs import it when they load.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from distrec.config import Bound, Positive

__all__ = ["RayConfig", "run_name", "check_shared_folders"]


@dataclass
class RayConfig:
    address: str | None = None  # None: $RAY_ADDRESS if set, else an embedded local Ray
    # N, or [min, max]: elastic, on as many workers as the cluster holds in that range; a run that
    # loses a node goes on with fewer (from its last checkpoint, resharded) and grows back when
    # nodes return, checking every resize_interval_s (README: Elastic training and resharding)
    num_workers: Positive[int] | tuple[Positive[int], Positive[int]] = 2
    resize_interval_s: Positive[float] = 60.0
    use_gpu: bool = False
    cpus_per_worker: Positive[float] = 1.0
    # worker failures survived by restoring the last checkpoint (-1: any number, as Ray's FailureConfig);
    # a UserError or DataError in a worker (bad input, a corrupt shard) ends the run at once
    max_failures: Annotated[int, Bound(ge=-1)] = 1
    storage_path: str = "runs/ray"  # where Ray Train keeps checkpoints (any URI)
    name: str | None = None  # run name; re-running with the same name resumes. None = derived from output_dir
    checkpoints_to_keep: Positive[int] = 2
    collective_timeout_s: Positive[int] = 600  # a worker stuck this long in a collective fails the attempt (then retried)
    # where the workers go (Ray's placement-group strategy): PACK fills a node first, SPREAD spreads
    # them over the nodes, STRICT_SPREAD gives each a node of its own, STRICT_PACK puts all on one
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # local folders every node mounts at the same path (NFS): on a cluster of more than one node, a
    # local path (data, storage_path, output_dir) outside them is refused (runtime/cluster.py)
    shared_paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_shared_folders(self.shared_paths, "ray.shared_paths")
        if self.elastic and self.min_workers > self.max_workers:
            raise ValueError(f"ray.num_workers: [min, max] with min <= max, got {list(self.num_workers)}")

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers


def check_shared_folders(folders: Sequence[str], key: str) -> None:
    """Declared shared folders are absolute local paths (ValueError naming ``key`` otherwise):
    a URI is shared by nature and needs no declaring."""
    for folder in folders:
        path = folder.removeprefix("file://")
        if "://" in path or not os.path.isabs(os.path.expanduser(path)):
            raise ValueError(
                f"{key}: {folder!r} is not an absolute local folder. List the folders every node of the cluster "
                f"mounts at the same path (e.g. [/mnt/nfs]; [/] declares every local path shared); URIs need no declaring"
            )


def run_name(cfg: Any) -> str:
    """``cfg.ray.name``, or a stable name from ``cfg.output_dir`` (same command → same run); any
    job config with ``ray`` and ``output_dir`` sections."""
    if cfg.ray.name:
        return cfg.ray.name
    tail = posixpath.basename(cfg.output_dir.rstrip("/")) or "run"
    return f"{tail}-{hashlib.sha1(cfg.output_dir.encode()).hexdigest()[:8]}"
