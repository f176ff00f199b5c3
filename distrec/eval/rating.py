"""Rating-prediction metrics, accumulated per worker and combined exactly across workers, and the
global-mean-plus-item-bias baseline they are compared with."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["RatingAccumulator", "item_bias_baseline"]


class RatingAccumulator:
    """Sums of squared and absolute errors and the count; ``result`` all-reduces them. ``device``:
    where the sums live (the predictions' device: no copy per batch; every worker the same)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # squared error, absolute error, count

    def add(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
        err = (pred.detach().double() - target.double()) * weight.double()
        self.sums += torch.stack([err.square().sum(), err.abs().sum(), weight.double().sum()]).to(self.sums.device)

    def result(self, prefix: str) -> dict[str, float]:
        sums = self.sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        sq, ab, n = sums.tolist()
        if n == 0:
            return {}
        return {f"{prefix}_rmse": math.sqrt(sq / n), f"{prefix}_mae": ab / n, f"{prefix}_count": int(n)}


def item_bias_baseline(item: np.ndarray, rating: np.ndarray, *, num_items: int, damping: float) -> tuple[float, torch.Tensor]:
    """The global-mean-plus-item-bias predictor fitted on training ratings spread over the
    workers: ``μ`` and ``b_i = Σ_u (r_ui − μ) / (n_i + damping)`` float64 [I] (Koren 2010, §2.1),
    0 for items without training ratings.
    ``item`` [N], ``rating`` [N]: this worker's training ratings. Collective."""
    item, rating = torch.as_tensor(item, dtype=torch.int64), torch.as_tensor(rating).double()
    both = dist.is_available() and dist.is_initialized()
    sums = torch.stack([rating.sum(), torch.tensor(float(len(rating)), dtype=torch.float64)])
    if both:
        dist.all_reduce(sums)
    mean = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
    per_item = torch.zeros(2, num_items, dtype=torch.float64)  # residual sums, counts
    per_item[0].index_add_(0, item, rating - mean)
    per_item[1].index_add_(0, item, torch.ones_like(rating))
    if both:
        dist.all_reduce(per_item)
    residual, count = per_item
    return mean, torch.where(count > 0, residual / (count + damping).clamp_min(1e-12), 0.0)  # unseen items: b_i = 0
