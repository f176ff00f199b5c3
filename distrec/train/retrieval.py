"""The retrieval task: next-item prediction from a user's time-ordered history (two towers).

Every training rating is an example: its item is the target, the user's training items before
it (at most ``model.history``, latest last) are the history. For validation the history is the
user's training items and the target their validation items; for test, the history is training
plus validation and the target the test items (on a leave-last-out split: the next item the
user rated). Items already in the history's part are masked, and every item is ranked
(``distrec.eval.ranking.evaluate_ranking``); the popularity ranking of the training counts is
scored beside it (``{part}_pop_*``), the baseline the model has to beat.

Histories need a user's whole sequence, so every worker reads all the interactions (an
``everything`` partition, distrec/data/partition.py; 8 bytes a pair per array; ML-25M: about
0.5 GB per worker) and takes every world-th example of one global shuffle per epoch. The log-Q
correction's q_j is item j's share of the training interactions: the probability that it is a
batch's positive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distrec.console import progress_bar
from distrec.data.dataset import InteractionDataset, Interactions
from distrec.data.item_features import item_features
from distrec.data.partition import BatchShare, Partition, agreed_steps, batch_share, strided
from distrec.data.user_items import UserItems
from distrec.errors import DataError
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.features.text import cached_text_embeddings
from distrec.models.spec import ModelContext
from distrec.models.two_tower import RATING_BUCKETS
from distrec.train.batches import EpochTotals
from distrec.train.config import TrainConfig
from distrec.train.export import export_vectors

__all__ = ["Sequences", "sequences", "windows", "RetrievalTask"]


@dataclass(frozen=True)
class Sequences:
    """Interactions grouped by user in time order: user u's are rows ``indptr[u]:indptr[u+1]``."""

    item: np.ndarray  # int64 [N]
    bucket: np.ndarray  # int64 [N]: rating bucket 1 … RATING_BUCKETS + 1
    indptr: np.ndarray  # int64 [U + 1]

    def __len__(self) -> int:
        return len(self.item)


def sequences(data: Interactions, *, num_users: int, rating_max: float) -> Sequences:
    """``data`` ordered by user, then timestamp (then file order when there are none)."""
    n = len(data)
    ts = data.ts if data.ts is not None else np.zeros(n, np.int64)
    order = np.lexsort((np.arange(n), ts, data.user))
    indptr = np.zeros(num_users + 1, np.int64)
    np.cumsum(np.bincount(data.user, minlength=num_users), out=indptr[1:])
    bucket = np.rint(data.rating[order] * (RATING_BUCKETS / max(rating_max, 1e-9))).clip(0, RATING_BUCKETS).astype(np.int64) + 1
    return Sequences(item=data.item[order].astype(np.int64), bucket=bucket, indptr=indptr)


def windows(seq: Sequences, *, start: np.ndarray, stop: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``[max(start, stop − length), stop)`` of each of B histories, right-aligned:
    items int64 [B, length] (−1 = padding) and rating buckets [B, length] (0 = padding)."""
    idx = stop[:, None] - length + np.arange(length)[None, :]  # [B, L]
    valid = idx >= start[:, None]
    safe = np.clip(idx, 0, max(len(seq) - 1, 0))
    items = np.where(valid, seq.item[safe] if len(seq) else 0, -1)
    buckets = np.where(valid, seq.bucket[safe] if len(seq) else 0, 0)
    return torch.from_numpy(items), torch.from_numpy(buckets)


class RetrievalTask:
    """Two-tower training with in-batch negatives; top-k retrieval metrics; tower exports."""

    def __init__(self, cfg: TrainConfig, dataset: InteractionDataset, split: str) -> None:
        self.cfg = cfg
        self.model_cfg = cfg.model
        self.dataset = dataset
        users, items = dataset.num_users, dataset.num_items
        everything = Partition.of("everything")
        parts = {p: everything.read(dataset, split=split, parts=[p], with_ts=True) for p in ("train", "val", "test")}
        if not len(parts["train"]):
            raise DataError(f"{dataset.uri}: split {split!r} has no training interactions")
        r_max = float(dataset.meta["rating"]["max"])
        self.train = sequences(parts["train"], num_users=users, rating_max=r_max)
        self.history = {  # the sequence a part's histories come from
            "val": self.train,
            "test": sequences(Interactions.concat([parts["train"], parts["val"]]), num_users=users, rating_max=r_max),
        }
        self.target = {
            p: UserItems.from_pairs(parts[p].user, parts[p].item, num_users=users, num_items=items) for p in ("val", "test")
        }
        self.seen = {
            p: UserItems.from_pairs(np.repeat(np.arange(users), np.diff(s.indptr)), s.item, num_users=users, num_items=items)
            for p, s in self.history.items()
        }
        self.counts = np.bincount(self.train.item, minlength=items).astype(np.float64)  # [I]
        self.log_q = torch.from_numpy(np.log(np.maximum(self.counts, 1.0) / max(len(self.train), 1))).float()  # [I]
        self.ranking = RankingConfig(ks=list(cfg.model.eval_ks))
        self.popularity: dict[str, dict[str, float]] = {}

    def context(self) -> ModelContext:
        return ModelContext(
            num_users=self.dataset.num_users, num_items=self.dataset.num_items, global_mean=0.0, item_vectors=self._item_vectors()
        )

    def _item_vectors(self) -> np.ndarray:
        """float32 [I, F]: genres multi-hot, year, year missing, and the frozen text encoder's
        vector of "title. overview"."""
        content = item_features(self.dataset)
        blocks = [content.dense().numpy()]
        text = self.model_cfg.text
        if text.model is not None:  # rank 0 encodes and caches; the others read the cache
            if dist.get_rank() == 0:
                blocks.append(cached_text_embeddings(content.texts(), text))
            dist.barrier()
            if dist.get_rank() != 0:
                blocks.append(cached_text_embeddings(content.texts(), text))
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        share, steps, batches = self.batches(epoch)
        row_user = np.repeat(np.arange(len(self.train.indptr) - 1), np.diff(self.train.indptr))  # [N]
        totals = EpochTotals(share)
        dmp.train()
        with progress_bar(total=steps, desc=f"epoch {epoch + 1}", unit="steps", enabled=dist.get_rank() == 0) as bar:
            for rows, weight in batches:
                history, buckets = windows(
                    self.train, start=self.train.indptr[row_user[rows]], stop=rows, length=self.model_cfg.history
                )
                item = torch.from_numpy(self.train.item[rows])
                loss = dmp(model.features(item, history), item, history, buckets, "both", self.log_q[item], weight)
                real = int(weight.sum())
                totals.step(loss, opt, rows=max(real, 1), real=real)  # the loss is the mean over the real rows
                bar.update(1)
        return totals.metrics()

    def batches(self, epoch: int) -> tuple[BatchShare, int, Iterator[tuple[np.ndarray, torch.Tensor]]]:
        """This worker's share of the global batch, its step count and its batches of ``epoch``:
        rows of ``self.train`` (int64 [B]) and their weights ([B], 0 for padding), every
        world-th example of one global shuffle (collective)."""
        rank, world = dist.get_rank(), dist.get_world_size()
        share = batch_share(self.cfg.train.global_batch(world), rank=rank, world=world)
        rng = np.random.default_rng([self.cfg.train.seed, epoch])  # one global order, the same on every worker
        mine = strided(rng.permutation(len(self.train)), rank=rank, world=world)
        steps = agreed_steps(len(mine), share.rows)

        def batches() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
            for step in range(steps):
                rows = mine[step * share.rows : (step + 1) * share.rows]
                weight = torch.zeros(share.shape)
                weight[: len(rows)] = 1.0
                yield np.concatenate([rows, np.zeros(share.shape - len(rows), np.int64)]), weight  # padding: row 0

        return share, steps, batches()

    def item_matrix(self, dmp, model) -> torch.Tensor:
        """Every item's vector [I, dim] (collective: every worker computes all of them)."""
        chunk, length = self.cfg.train.eval_batch_size, self.model_cfg.history
        out = []
        for start in range(0, self.dataset.num_items, chunk):
            item = torch.arange(start, min(start + chunk, self.dataset.num_items))
            empty = torch.full((len(item), length), -1, dtype=torch.int64)
            out.append(dmp(model.features(item, empty), item, empty, torch.zeros_like(empty), "item")[1])
        return torch.cat(out)

    def user_vectors(self, dmp, model, users: torch.Tensor, part: str) -> torch.Tensor:
        """Vectors [B, dim] of ``users`` from their histories for scoring ``part``."""
        seq = self.history[part]
        u = users.numpy()
        history, buckets = windows(seq, start=seq.indptr[u], stop=seq.indptr[u + 1], length=self.model_cfg.history)
        none = torch.full((len(u),), -1, dtype=torch.int64)
        return dmp(model.features(none, history), none, history, buckets, "user")[0]

    def evaluate(self, dmp, model, part: str) -> dict[str, float]:
        if part not in self.target:
            raise ValueError(f"no part {part!r}")
        dmp.eval()
        with torch.no_grad():
            items = self.item_matrix(dmp, model)  # [I, dim]
            metrics = evaluate_ranking(
                lambda users: self.user_vectors(dmp, model, users, part) @ items.T,
                target=self.target[part],
                seen=self.seen[part],
                cfg=self.ranking,
                prefix=part,
            )
        dmp.train()
        if part not in self.popularity:
            scores = torch.from_numpy(self.counts).float()
            self.popularity[part] = evaluate_ranking(
                lambda users: scores.expand(len(users), -1),
                target=self.target[part],
                seen=self.seen[part],
                cfg=self.ranking,
                prefix=f"{part}_pop",
            )
        return {**metrics, **self.popularity[part]}

    def export(self, dmp, model, *, output_dir: str, meta: dict[str, Any]) -> dict[str, str]:
        """User vectors (from each user's training + validation history) and item vectors as
        embedding tables ``user`` and ``item``; their dot product ranks as the test metrics do."""
        dmp.eval()
        with torch.no_grad():
            items = self.item_matrix(dmp, model).numpy()
            chunk = self.cfg.train.eval_batch_size
            users = torch.arange(self.dataset.num_users)
            vectors = torch.cat(
                [self.user_vectors(dmp, model, users[s : s + chunk], "test") for s in range(0, len(users), chunk)]
            ).numpy()
        dmp.train()
        meta = {**meta, "history": "train+val"}
        return {
            "user": export_vectors(vectors, name="user", output_dir=output_dir, dataset=self.dataset, meta=meta),
            "item": export_vectors(items, name="item", output_dir=output_dir, dataset=self.dataset, meta=meta),
        }
