"""Rating-prediction metrics, accumulated per worker and combined exactly across workers."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

__all__ = ["RatingAccumulator"]


class RatingAccumulator:
    """Sums of squared and absolute errors and the count; ``result`` all-reduces them."""

    def __init__(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64)  # squared error, absolute error, count

    def add(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
        err = (pred.detach().double() - target.double()) * weight.double()
        self.sums += torch.stack([err.square().sum(), err.abs().sum(), weight.double().sum()])

    def result(self, prefix: str) -> dict[str, float]:
        sums = self.sums.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        sq, ab, n = sums.tolist()
        if n == 0:
            return {}
        return {f"{prefix}_rmse": math.sqrt(sq / n), f"{prefix}_mae": ab / n, f"{prefix}_count": int(n)}
