"""What a model learns from, and how it is scored: the part of training that differs by task.

The loop (worker.py) owns everything else: sharding, resume, epochs, checkpoints, early stopping,
export. A task reads this worker's slices of the data, tells the model builder what it needs to
know (``context``), runs one epoch and scores a split part. ``RatingTask`` serves rating
regression (biased MF, NCF, ...); ``RankingTask`` (ranking_task.py) serves top-k models,
``RetrievalTask`` (retrieval.py) the two-tower model.

A task asks distrec/data/partition.py for its share of the data. Content models (NCF with
profiles) describe a user by all of their rated items, so for them each worker keeps the rows of
its own users (a ``by_user`` partition) instead of its row groups: every worker then holds the
complete histories of the users it trains and scores. When the split holds users out of
training (``u1:holdout=0.1``), their profile rows join the histories, and each scored part also
reports the held-out ("cold") and the other ("warm") users apart, beside the
global-mean-plus-item-bias baseline on the same rows.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from distrec.console import progress_bar
from distrec.data.dataset import InteractionDataset, Interactions
from distrec.data.histories import RatingHistories
from distrec.data.item_features import item_features
from distrec.data.partition import Partition, agreed_steps
from distrec.eval.rating import RatingAccumulator, item_bias_baseline
from distrec.models.spec import ModelContext, ModelSpec
from distrec.storage import join, write_text
from distrec.train.batches import EpochBatches, EpochTotals, epoch_batches, rating_batches
from distrec.train.config import TrainConfig
from distrec.train.ranking_task import RankingTask

__all__ = ["Task", "RatingTask", "make_task", "BASELINE_DAMPING"]

# The baseline's item biases are shrunk by n_i + damping; its RMSE is reported at the best of
# these values on the scored rows themselves, which can only flatter the baseline.
BASELINE_DAMPING = (0.0, 5.0, 10.0, 25.0)


class Task(Protocol):
    def context(self) -> ModelContext: ...

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]: ...

    def evaluate(self, dmp, model, part: str) -> dict[str, float]: ...


class RatingTask:
    """Explicit ratings: MSE-type objectives, RMSE/MAE on held-out ratings (clipped to the scale)."""

    def __init__(self, cfg: TrainConfig, dataset: InteractionDataset, split: str, *, needs: tuple[str, ...] = ()) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.needs = needs  # the model spec's: "histories", "item_features"
        names = ("train", "val", "test") + (("profile",) if dataset.split_counts(split).get("profile") else ())
        partition = Partition.of("by_user" if "histories" in self.needs else "row_groups")
        self.parts = {p: partition.read(dataset, split=split, parts=[p]) for p in names}
        rating = dataset.meta["rating"]
        self.clip = (float(rating["min"]), float(rating["max"]))
        self.cold = self._held_out_users()  # bool [U] or None

    def _held_out_users(self) -> torch.Tensor | None:
        if "profile" not in self.parts:
            return None
        held = torch.zeros(self.dataset.num_users, dtype=torch.int32)
        held[torch.from_numpy(self.parts["profile"].user)] = 1
        dist.all_reduce(held, op=dist.ReduceOp.MAX)
        return held.bool()

    def context(self) -> ModelContext:
        train = self.parts["train"]
        sums = torch.tensor([float(train.rating.astype(np.float64).sum()), float(len(train))], dtype=torch.float64)
        dist.all_reduce(sums)
        mean = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
        known = [self.parts[p] for p in ("train", "profile") if p in self.parts]
        return ModelContext(
            num_users=self.dataset.num_users,
            num_items=self.dataset.num_items,
            global_mean=mean,
            rating_range=self.clip,
            histories=(
                RatingHistories.from_interactions(
                    Interactions.concat(known), num_users=self.dataset.num_users, seed=self.cfg.train.seed
                )
                if "histories" in self.needs
                else None
            ),
            item_features=item_features(self.dataset) if "item_features" in self.needs else None,
        )

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        batches = self.batches(epoch)
        totals = EpochTotals(batches.share)
        with progress_bar(total=batches.steps, desc=f"epoch {epoch + 1}", unit="steps", enabled=dist.get_rank() == 0) as bar:
            for batch in batches:
                on = batch.to(dmp.device)  # the model's device (a GPU with ray.use_gpu)
                loss = dmp(*_inputs(model, on), on.rating, on.weight)  # the mean over the batch's rows
                totals.step(loss, opt, rows=batches.share.shape, real=batch.real_rows)
                bar.update(1)
        return totals.metrics()

    def batches(self, epoch: int) -> EpochBatches:
        """This worker's training batches of ``epoch`` (collective)."""
        return epoch_batches(self.parts["train"], self.cfg.train, epoch)

    def evaluate(self, dmp, model, part: str) -> dict[str, float]:
        device = dmp.device
        acc = RatingAccumulator(device)
        data = self.parts[part]
        batch_size = self.cfg.train.eval_batch_size
        groups = {} if self.cold is None else {"cold": RatingAccumulator(device), "warm": RatingAccumulator(device)}
        baselines = self._baselines() if groups and part == "test" else {}
        base_acc = {(g, k): RatingAccumulator() for g in ("all", "cold") for k in baselines}
        with torch.no_grad():
            for batch in rating_batches(data, batch_size=batch_size, steps=agreed_steps(len(data), batch_size), rng=None):
                on = batch.to(device)
                pred = dmp(*_inputs(model, on)).clamp(*self.clip)
                acc.add(pred, on.rating, on.weight)
                if not groups:
                    continue
                cold = self.cold[batch.user].float() * batch.weight  # type: ignore[index]
                groups["cold"].add(pred, on.rating, cold.to(device))
                groups["warm"].add(pred, on.rating, on.weight - cold.to(device))
                for k, (mean, bias) in baselines.items():
                    base = (mean + bias[batch.item]).clamp(*self.clip)
                    base_acc["all", k].add(base, batch.rating, batch.weight)
                    base_acc["cold", k].add(base, batch.rating, cold)
        out = acc.result(part)
        for name, group in groups.items():
            out.update(group.result(f"{part}_{name}"))
        for g in ("all", "cold"):
            results = {k: base_acc[g, k].result("b") for k in baselines}
            if results and all(results.values()):
                best = min(results, key=lambda k: results[k]["b_rmse"])
                prefix = f"{part}_baseline" if g == "all" else f"{part}_cold_baseline"
                out.update(
                    {
                        f"{prefix}_rmse": results[best]["b_rmse"],
                        f"{prefix}_mae": results[best]["b_mae"],
                        f"{prefix}_damping": best,
                    }
                )
        return out

    def explain(self, dmp, model, output_dir: str) -> None:
        """For models with item-item attention: the attention one test user (a held-out one if the
        split has them) gives their rated items for one of their test items, written by the worker
        owning that user to ``attention.json``. Collective: every worker runs the forward."""
        if not getattr(model, "explains", False):
            return
        test = self.parts["test"]
        users = test.user if self.cold is None else test.user[self.cold[torch.from_numpy(test.user)].numpy()]
        mine = torch.tensor([int(users.min()) if len(users) else self.dataset.num_users])
        dist.all_reduce(mine, op=dist.ReduceOp.MIN)
        user = int(mine)
        if user == self.dataset.num_users:
            return
        rows = np.flatnonzero(test.user == user)
        pick = torch.tensor([int(test.item[rows[0]]) if len(rows) else -1])
        dist.all_reduce(pick, op=dist.ReduceOp.MAX)
        u, i = torch.tensor([user]), pick.clone()
        with torch.no_grad():
            weights = dmp(*model.features(u, i), explain=True)[0]  # [L]
            pred = dmp(*model.features(u, i))[0]
        if not len(rows):
            return
        block = model.histories.block(np.array([user]), max_len=model.cfg.max_history)
        titles = item_features(self.dataset).titles
        ids = self.dataset.read_table("ids/user.parquet")
        history = [
            {"item": int(j), "title": titles[int(j)], "rating": float(r), "weight": float(w)}
            for j, r, w, m in zip(block.item[0], block.rating[0], weights, block.mask[0])
            if m and int(j) != int(pick)
        ]
        write_text(
            join(output_dir, "attention.json"),
            json.dumps(
                {
                    "user": int(ids.column("raw")[user].as_py()) if ids is not None else user,
                    "held_out": bool(self.cold is not None and self.cold[user]),
                    "target": {
                        "item": int(pick),
                        "title": titles[int(pick)],
                        "rating": float(test.rating[rows[0]]),
                        "predicted": float(pred),
                    },
                    "history": sorted(history, key=lambda h: -h["weight"]),
                },
                indent=1,
            ),
        )

    def _baselines(self) -> dict[float, tuple[float, torch.Tensor]]:
        """The global-mean-plus-item-bias predictor fitted on the training rows, per damping."""
        train = self.parts["train"]
        return {
            k: item_bias_baseline(train.item, train.rating, num_items=self.dataset.num_items, damping=k) for k in BASELINE_DAMPING
        }


def _inputs(model, batch) -> tuple:
    """The model's forward inputs for a batch's pairs (a KJT, or a KJT and dense tensors)."""
    inputs = model.features(batch.user, batch.item)
    return inputs if isinstance(inputs, tuple) else (inputs,)


def make_task(cfg: TrainConfig, spec: ModelSpec, dataset: InteractionDataset, split: str) -> Any:
    """The task the model trains on (its spec's ``task``), given what the model ``needs``."""
    if spec.task == "rating":
        return RatingTask(cfg, dataset, split, needs=spec.needs)
    if spec.task == "ranking":
        return RankingTask(cfg, dataset, split)
    if spec.task == "retrieval":
        from distrec.train.retrieval import RetrievalTask  # the text encoder's libraries: only for this task

        return RetrievalTask(cfg, dataset, split)
    raise ValueError(f"no task {spec.task!r}")
