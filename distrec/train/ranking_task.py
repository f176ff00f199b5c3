"""Top-k training: (user, positive, sampled negatives) batches, BPR or sampled-softmax loss,
full-ranking evaluation over every item.

Data: a ``by_user`` partition (distrec/data/partition.py): each worker reads its row groups of
train/val/test, then the pairs move to the worker owning their user (one all-to-all): a worker
then holds every training positive of its users, so negatives are rejected against a user's full history without any
further communication, and it evaluates exactly its users (``evaluate_ranking(users=...)``).
Item counts (for the popularity sampler and PSP@k) are all-reduced once.

Protocol (distrec/eval/holdout.py, the ∞-AE paper's): val is ranked with train masked, test
with train + val masked; keys ``{part}_ndcg@10``, ``{part}_hr@100``, ... as
``distrec.eval.ranking`` names them, so early stopping watches ``val_ndcg@10`` (mode max).

A ranking model (``task = "ranking"``) provides, besides the table model's ``tables``,
``sparse``, ``export_groups``, ``export`` and ``export_meta``:

    forward(user [B], items [B, C]) -> (scores [B, C], reg [B])   # called as dmp(user, items);
                                        # items[:, 0] the positive; reg: its L2 penalty per row
    scorer() -> Scorer                  # users [B] -> scores [B, I]; a collective: every worker
                                        # builds it and calls it in step (distrec/eval/ranking.py)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from distrec.console import progress_bar
from distrec.data.dataset import InteractionDataset
from distrec.data.partition import Partition
from distrec.data.user_items import UserItems
from distrec.eval.holdout import Holdout, Part
from distrec.eval.ranking import evaluate_ranking
from distrec.eval.ranking_metrics import item_propensity
from distrec.models.spec import ModelContext
from distrec.train.batches import EpochBatches, EpochTotals, epoch_batches
from distrec.train.config import TrainConfig
from distrec.train.negatives import NegativeSampler, popularity_weights
from distrec.train.ranking_losses import LOSSES

__all__ = ["RankingTask"]


class RankingTask:
    """Implicit feedback: every pair is a positive, negatives are sampled, items ranked in full."""

    def __init__(self, cfg: TrainConfig, dataset: InteractionDataset, split: str) -> None:
        self.cfg = cfg.train
        self.rcfg = cfg.ranking
        self.dataset = dataset
        partition = Partition.of("by_user")
        shape = {"num_users": dataset.num_users, "num_items": dataset.num_items}
        rows = {p: partition.read(dataset, split=split, parts=[p]) for p in ("train", "val", "test")}
        self.train = rows["train"]
        pairs = {p: UserItems.from_pairs(r.user, r.item, **shape) for p, r in rows.items()}
        self.holdout = Holdout(**pairs, train_val=pairs["train"].union(pairs["val"]))
        self.users = partition.users(dataset.num_users)  # the users this worker owns
        counts = torch.from_numpy(pairs["train"].item_counts())
        dist.all_reduce(counts)
        counts = counts.numpy()
        self.propensity = item_propensity(counts, int(counts.sum()))
        weights = popularity_weights(counts, self.rcfg.popularity_alpha) if self.rcfg.sampler == "popularity" else None
        self.sampler = NegativeSampler(self.train.user, self.train.item, num_items=dataset.num_items, weights=weights)

    def context(self) -> ModelContext:
        shape = {"num_users": self.dataset.num_users, "num_items": self.dataset.num_items}
        return ModelContext(**shape, global_mean=0.0, train=self.train)  # train: a graph model's edges

    def train_epoch(self, dmp, model, opt: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        n, loss_fn = self.rcfg.negatives, LOSSES[self.rcfg.loss]
        batches = self.batches(epoch)
        size = batches.share.shape
        totals = EpochTotals(batches.share)
        with progress_bar(total=batches.steps, desc=f"epoch {epoch + 1}", unit="steps", enabled=dist.get_rank() == 0) as bar:
            for batch in batches:
                neg = self.sampler.sample(batch.user.numpy(), n, batches.rng)  # [B, n]
                items = torch.cat([batch.item[:, None], torch.from_numpy(neg)], 1)  # [B, 1 + n], positive first
                scores, reg = dmp(batch.user, items)
                per_row = loss_fn(scores, torch.from_numpy(self.sampler.prob[neg]).float()) + reg  # [B]
                loss = (batch.weight * per_row).sum() / size
                totals.step(loss, opt, rows=size, real=batch.real_rows)
                bar.update(1)
        return totals.metrics()

    def batches(self, epoch: int) -> EpochBatches:
        """This worker's training batches of ``epoch`` (its users' positives; collective)."""
        return epoch_batches(self.train, self.cfg, epoch)

    def evaluate(self, dmp, model, part: Part) -> dict[str, float]:
        with torch.no_grad():
            score = model.scorer()  # collective: every worker builds it
            return evaluate_ranking(
                score,
                target=self.holdout.target(part),
                seen=self.holdout.seen(part),
                cfg=self.rcfg.eval,
                prefix=part,
                propensity=self.propensity,
                users=self.users,
            )
