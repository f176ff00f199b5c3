"""LightGCN: the partitioned graph propagation against a dense single-process reference (forward
and gradients, on 2 real gloo ranks)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from distrec.models.bipartite import balanced_bounds, build_graph, propagate
from tests.helpers import run_ranks

USERS, ITEMS, DIM, LAYERS = 7, 5, 3, 3


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    key = np.unique(rng.integers(0, USERS * ITEMS, size=20))
    user, item = key // ITEMS, key % ITEMS
    return np.append(user, USERS - 1), np.append(item, ITEMS - 1)  # the last user and item have an edge


def _dense_adjacency(user: np.ndarray, item: np.ndarray) -> torch.Tensor:
    """Â = D^-1/2 [[0, R], [Rᵀ, 0]] D^-1/2, written out densely."""
    n = USERS + ITEMS
    a = np.zeros((n, n))
    a[user, USERS + item] = a[USERS + item, user] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def _start() -> torch.Tensor:
    return torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(1))


def _weights(rank: int) -> torch.Tensor:
    """A different loss per worker, so each one's gradient matters."""
    return torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(10 + rank))


def _layer_mean(x: torch.Tensor, step) -> torch.Tensor:
    layer, total = x, x
    for _ in range(LAYERS):
        layer = step(layer)
        total = total + layer
    return total / (LAYERS + 1)


def _propagate_on_ranks():
    rank, world = dist.get_rank(), dist.get_world_size()
    user, item = _pairs()
    graph = build_graph(user[rank::world], item[rank::world], num_users=USERS, num_items=ITEMS)  # any split of the pairs
    x = _start().requires_grad_()
    out = _layer_mean(x, lambda e: propagate(e, graph))
    (out * _weights(rank)).sum().backward()
    return out.detach(), x.grad, graph.bounds, graph.adj._nnz()


def test_partitioned_propagation_equals_the_dense_reference():
    user, item = _pairs()
    a = _dense_adjacency(user, item)
    x = _start().requires_grad_()
    ref = _layer_mean(x, lambda e: a @ e)
    (ref * (_weights(0) + _weights(1))).sum().backward()  # the loss summed over both workers

    results = run_ranks(_propagate_on_ranks, 2)
    for out, _, _, _ in results:
        torch.testing.assert_close(out, ref.detach())
    torch.testing.assert_close(results[0][1] + results[1][1], x.grad)  # what TorchRec sums onto the tables
    bounds = results[0][2]
    assert bounds[0] == 0 and bounds[-1] == USERS + ITEMS and 0 < bounds[1] < USERS + ITEMS
    assert sum(r[3] for r in results) == 2 * len(user)  # every directed edge on exactly one worker

    single = build_graph(user, item, num_users=USERS, num_items=ITEMS)  # no process group: one block
    torch.testing.assert_close(single.adj.to_dense(), a)
    torch.testing.assert_close(_layer_mean(_start(), lambda e: propagate(e, single)), ref.detach())


def test_balanced_bounds_split_the_nonzeros_evenly():
    degree = np.array([5, 1, 1, 1, 1, 1, 5, 5])
    bounds = balanced_bounds(degree, 2)
    assert list(bounds[[0, -1]]) == [0, 8]
    halves = [degree[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]
    assert abs(halves[0] - halves[1]) <= 5
