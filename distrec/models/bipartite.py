"""The symmetric-normalised user–item graph, partitioned by rows across workers, and its
propagation (He et al. 2020, LightGCN, eq. 7–8).

Nodes are users ``0..U-1`` then items ``U..U+I-1`` (N = U + I). With R the 0/1 interaction
matrix and D the node degrees,

    Â = D^-1/2 [[0, R], [Rᵀ, 0]] D^-1/2          Â[u, U+i] = Â[U+i, u] = 1 / sqrt(d_u · d_i)

**Partition.** Worker r owns the contiguous node rows ``bounds[r]:bounds[r+1]``, cut so that
every worker holds about the same number of non-zeros (2·|R| / world). ``build_graph`` starts
from any slice of the training pairs per worker (each pair on exactly one worker, e.g. the
dataset's row groups by rank): degrees are all-reduced, and each directed edge is sent to the
owner of its row with one ``all_to_all``, so no worker ever holds the whole edge list. A worker
keeps its row block ``Â[rows_r]`` [n_r, N] and that block's transpose, both as CSR.

**Propagation.** ``propagate(E, graph)`` is ``Â @ E`` for a full ``E`` [N, D] on every worker:
each worker multiplies its row block (``Â[rows_r] @ E``, [n_r, D]) and the blocks are
all-gathered with the autograd-aware ``torch.distributed.nn.functional.all_gather``. Its
backward sums every worker's gradient of a block onto the block's owner, which multiplies by
its transposed block: worker r's gradient of E is ``Â[rows_r]ᵀ · Σ_s ∂L_s/∂(ÂE)[rows_r]``, so
summing the gradients of E over workers (which TorchRec's backward all-to-all does for the
embedding rows) gives exactly ``∂(Σ_s L_s)/∂E``, as if one process had propagated the whole
graph (tested on 2 gloo ranks). Without a process group, or on one worker, it is one sparse
matmul.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

__all__ = ["Graph", "build_graph", "propagate", "balanced_bounds"]


@dataclass(frozen=True)
class Graph:
    """This worker's rows of Â: ``adj`` [n_r, N] and ``adj_t`` = ``adj``ᵀ [N, n_r], CSR float32."""

    num_users: int
    num_items: int
    bounds: tuple[int, ...]  # [world + 1] first node row of each worker's block, then N
    rank: int
    adj: torch.Tensor
    adj_t: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def world(self) -> int:
        return len(self.bounds) - 1


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def balanced_bounds(degree: np.ndarray, world: int) -> np.ndarray:
    """Cut points [world + 1] of contiguous node blocks with about equal non-zeros each."""
    cum = np.cumsum(degree)
    total = int(cum[-1]) if len(cum) else 0
    cuts = np.searchsorted(cum, total * np.arange(1, world) / world, side="left") + 1
    return np.concatenate([[0], np.minimum(cuts, len(degree)), [len(degree)]]).astype(np.int64)


def _exchange(rows: torch.Tensor, cols: torch.Tensor, owner: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Send each (row, col) pair to worker ``owner``; returns the pairs this worker received."""
    if world == 1:
        return rows, cols
    order = torch.argsort(owner, stable=True)
    send = torch.stack([rows[order], cols[order]], dim=1)  # [E, 2]
    send_counts = torch.bincount(owner, minlength=world)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts)
    recv = torch.empty(int(recv_counts.sum()), 2, dtype=torch.int64)
    dist.all_to_all_single(recv, send, output_split_sizes=recv_counts.tolist(), input_split_sizes=send_counts.tolist())
    return recv[:, 0], recv[:, 1]


def build_graph(user: np.ndarray, item: np.ndarray, *, num_users: int, num_items: int) -> Graph:
    """This worker's row block of Â from this worker's training pairs ``user``, ``item`` [E_r]
    (the pairs of all workers together are the graph, each pair once). Collective."""
    rank, world = _world()
    n = num_users + num_items
    user_t = torch.as_tensor(np.asarray(user, dtype=np.int64))
    node_t = torch.as_tensor(np.asarray(item, dtype=np.int64)) + num_users
    degree = torch.bincount(torch.cat([user_t, node_t]), minlength=n).to(torch.float64)  # [N]
    if world > 1:
        dist.all_reduce(degree)
    bounds = torch.from_numpy(balanced_bounds(degree.numpy(), world))
    rows = torch.cat([user_t, node_t])  # both directions of every edge
    cols = torch.cat([node_t, user_t])
    owner = torch.searchsorted(bounds, rows, right=True) - 1
    rows, cols = _exchange(rows, cols, owner, world)
    inv_sqrt = degree.clamp(min=1).rsqrt()
    values = (inv_sqrt[rows] * inv_sqrt[cols]).to(torch.float32)
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    adj = torch.sparse_coo_tensor(torch.stack([rows - lo, cols]), values, (hi - lo, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the matmuls used here are not
        warnings.simplefilter("ignore", UserWarning)
        csr, csr_t = adj.to_sparse_csr(), adj.t().coalesce().to_sparse_csr()
    return Graph(num_users=num_users, num_items=num_items, bounds=tuple(int(b) for b in bounds), rank=rank, adj=csr, adj_t=csr_t)


class _BlockMatmul(torch.autograd.Function):
    """``adj @ x`` with the backward ``adj_t @ grad`` from a transpose built once."""

    @staticmethod
    def forward(ctx, x, adj, adj_t):  # type: ignore[override]
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.adj_t @ grad.contiguous(), None, None


def _gather_blocks(block: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """Every worker's row block [n_s, D], stacked into [N, D] on every worker (autograd-aware).
    Blocks are padded to the largest so that all-gather sees equal shapes."""
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    pad = max(sizes) - block.shape[0]
    padded = torch.nn.functional.pad(block, (0, 0, 0, pad)) if pad else block
    parts = dist_fn.all_gather(padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def propagate(x: torch.Tensor, graph: Graph) -> torch.Tensor:
    """One propagation step ``Â @ x`` for node features ``x`` [N, D] (the same on every worker);
    returns [N, D] on every worker. Collective when the graph is split over workers."""
    block = _BlockMatmul.apply(x, graph.adj, graph.adj_t)  # [n_r, D]
    return block if graph.world == 1 else _gather_blocks(block, graph.bounds)
