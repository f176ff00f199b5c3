"""What the connected Ray cluster is: its nodes, whether a job's paths must be shared, and which
node each worker ran on.

On one node (an embedded Ray, a ``make ray-up`` head) a local path is a folder every worker
sees. On a cluster of several nodes it is not: each node has its own disk. A worker on another
node finds no ``data.path=/home/me/data`` there (or a stale copy), and the checkpoints and
outputs it writes to a local ``ray.storage_path`` or ``output_dir`` land on its own disk, where
the driver and the next attempt never look. So on a cluster of more than one node a job stops
before any worker starts when one of its locations (its ``paths`` in distrec/jobs.py) is local,
unless it lies under a folder declared shared (``ray.shared_paths``, a sweep's ``shared_paths``:
every node mounts it at the same path, e.g. NFS). URIs (``s3://``, ``gs://``, ...) are shared by
nature; ``memory://`` lives in one process and never is.

The check counts the cluster's live nodes when the job starts: an autoscaling cluster that has
only its head so far counts as one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from distrec.errors import UserError
from distrec.storage import is_local

__all__ = ["alive_nodes", "check_shared_paths", "unshared", "worker_nodes"]

_NODE_ID_BYTES = 28  # a Ray node id (ray.NodeID.size())


def alive_nodes() -> list[dict[str, Any]]:
    """The connected cluster's live nodes (``ray.nodes()`` entries)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_shared_paths(paths: Mapping[str, str], *, shared: Sequence[str], declare: str) -> None:
    """Refuse (UserError) the ``paths`` (dotted key → location) that other nodes cannot reach
    when the connected cluster has more than one live node. ``shared``: the declared shared
    folders; ``declare``: the setting that declares them, named in the fix."""
    nodes = len(alive_nodes())
    local = unshared(paths, shared)
    if nodes < 2 or not local:
        return
    named = ", ".join(f"{key}={paths[key]}" for key in local)
    folders = sorted({os.path.dirname(_real(paths[key])) for key in local if is_local(paths[key])})
    example = f"{declare}=[{','.join(folders)}]" if folders else f"{declare}=[/mnt/shared]"
    raise UserError(
        f"{named}: not shared storage, and this Ray cluster has {nodes} nodes. Workers on the other nodes cannot "
        f"read this machine's disk: they would find no data there, and their checkpoints and outputs would stay on "
        f"their own disks. Give an s3:// (or other object-store) URI for each, or, if every node mounts the folder "
        f"at the same path (NFS), declare it shared: {example}"
    )


def unshared(paths: Mapping[str, str], shared: Sequence[str]) -> list[str]:
    """The keys of ``paths`` whose location other nodes cannot reach: local paths (symlinks and
    ``..`` resolved) outside every ``shared`` folder, and ``memory://``."""
    roots = [_real(folder).rstrip("/") + "/" for folder in shared]
    out = []
    for key, uri in paths.items():
        if uri.startswith("memory://"):
            out.append(key)
        elif is_local(uri):
            path = _real(uri).rstrip("/") + "/"
            if not any(path.startswith(root) for root in roots):
                out.append(key)
    return out


def _real(uri: str) -> str:
    return os.path.realpath(os.path.expanduser(uri.removeprefix("file://")))


def worker_nodes() -> list[str | None]:
    """Every rank's Ray node id, in rank order (a collective: every rank calls it); None for a
    rank outside Ray (gloo processes in tests, which need not import Ray for this)."""
    import torch
    import torch.distributed as dist

    ray = sys.modules.get("ray")  # a Ray worker has imported it
    node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    mine = torch.tensor(list(bytes.fromhex(node)) if node else [0] * _NODE_ID_BYTES, dtype=torch.uint8)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [bytes(t.tolist()).hex() if any(t.tolist()) else None for t in everyone]
