"""What a model learns from, and how it is scored: the part of training that differs by task.

The loop (loop.py) owns everything else: sharding, resume, epochs, checkpoints, early stopping,
export. A task reads this worker's slices of the data, tells the model builder what it needs to
know (``context``), runs one epoch and scores a split part. ``RatingTask`` serves rating
regression (biased MF, ...); ``RankingTask`` (ranking_task.py) serves top-k models.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from distrec.data.dataset import InteractionDataset, Interactions
from distrec.eval.rating import RatingAccumulator
from distrec.models.registry import ModelContext
from distrec.progress import progress
from distrec.resources import Stopwatch
from distrec.train.batches import agreed_steps, rating_batches
from distrec.train.config import TrainConfig
from distrec.train.ranking_task import RankingTask

__all__ = ["Task", "RatingTask", "make_task"]


class Task(Protocol):
    def context(self) -> ModelContext: ...

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]: ...

    def evaluate(self, dmp, model, part: str) -> dict[str, float]: ...


class RatingTask:
    """Explicit ratings: MSE-type objectives, RMSE/MAE on held-out ratings (clipped to the scale)."""

    def __init__(self, cfg: TrainConfig, dataset: InteractionDataset, split: str) -> None:
        self.cfg = cfg
        self.dataset = dataset
        rank, world = dist.get_rank(), dist.get_world_size()
        self.parts = {p: dataset.read(split=split, parts=[p], rank=rank, world=world) for p in ("train", "val", "test")}
        rating = dataset.meta["rating"]
        self.clip = (float(rating["min"]), float(rating["max"]))

    def context(self) -> ModelContext:
        train = self.parts["train"]
        sums = torch.tensor([float(train.rating.astype(np.float64).sum()), float(len(train))], dtype=torch.float64)
        dist.all_reduce(sums)
        mean = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
        return ModelContext(num_users=self.dataset.num_users, num_items=self.dataset.num_items, global_mean=mean)

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        data: Interactions = self.parts["train"]
        batch_size = self.cfg.train.batch_size
        steps = agreed_steps(len(data), batch_size)
        rng = np.random.default_rng([self.cfg.train.seed, epoch, dist.get_rank()])  # reproducible on resume
        total = torch.zeros(2, dtype=torch.float64)  # objective sum, rows
        clock = Stopwatch()
        with progress(total=steps, desc=f"epoch {epoch + 1}", unit="steps", enabled=dist.get_rank() == 0) as bar:
            for batch in rating_batches(data, batch_size=batch_size, steps=steps, rng=rng):
                loss = dmp(model.features(batch.user, batch.item), batch.rating, batch.weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # embedding rows are updated inside backward (fused optimizer)
                opt.step()
                total += torch.tensor([loss.item() * batch_size, batch.real_rows], dtype=torch.float64)
                bar.update(1)
        seconds = clock.seconds()
        dist.all_reduce(total)
        return {
            "train_loss": float(total[0] / max(total[1], 1)),
            "train_samples_per_s": float(total[1]) / max(seconds, 1e-9),
            "epoch_s": seconds,
        }

    def evaluate(self, dmp, model, part: str) -> dict[str, float]:
        acc = RatingAccumulator()
        data = self.parts[part]
        batch_size = self.cfg.train.eval_batch_size
        with torch.no_grad():
            for batch in rating_batches(data, batch_size=batch_size, steps=agreed_steps(len(data), batch_size), rng=None):
                pred = dmp(model.features(batch.user, batch.item))
                acc.add(pred.clamp(*self.clip), batch.rating, batch.weight)
        return acc.result(part)


def make_task(cfg: TrainConfig, dataset: InteractionDataset, split: str) -> Any:
    """The task the configured model trains on (models declare it as ``task``)."""
    from distrec.models.registry import model_task

    kind = model_task(cfg.model)
    if kind == "rating":
        return RatingTask(cfg, dataset, split)
    if kind == "ranking":
        return RankingTask(cfg, dataset, split)
    if kind == "retrieval":
        from distrec.train.retrieval import RetrievalTask

        return RetrievalTask(cfg, dataset, split)
    raise ValueError(f"no task {kind!r}")
