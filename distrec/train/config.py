"""The training job's config (``jobs/train.py``), one dataclass per YAML section.

data:     {path: URI, split: u1}
model:    {name: mf, dim: 64, ...}          # chosen by name from distrec.models
train:    {epochs: 20, global_batch_size: 16384, ...}   # or batch_size: rows per worker
optim:    {sparse: rowwise_adagrad, sparse_lr: 0.05, dense: adam, dense_lr: 0.01}
sharding: {types: {user: table_wise}}      # optional per-table constraints for the planner
ranking:  {loss: bpr, negatives: 1, sampler: uniform, eval: {ks: [10, 100]}}   # top-k models only
ray:      {num_workers: 2, use_gpu: false, storage_path: runs/ray, ...}
tracking: {tensorboard: false, mlflow_uri: null, ...}   # see distrec/tracking.py; off by default
output_dir: URI
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from distrec.config import Bound, NonNegative, Positive
from distrec.data.dataset import DataConfig
from distrec.errors import UserError
from distrec.eval.ranking import RankingConfig
from distrec.models.registry import TRAINED, config_union, model_spec
from distrec.runtime.config import RayConfig
from distrec.tracking import TrackingConfig

__all__ = [
    "DataConfig",
    "TrainLoopConfig",
    "OptimConfig",
    "ShardingConfig",
    "RankingTaskConfig",
    "TrainConfig",
    "SHARDING_TYPES",
    "CPU_SHARDING_TYPES",
    "SPARSE_OPTIMIZERS",
    "ADAM_ON_CPU",
]

SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "table_row_wise", "data_parallel")
CPU_SHARDING_TYPES = ("table_wise", "column_wise", "data_parallel")
SPARSE_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam")
DEFAULT_BATCH_SIZE = 8192  # train.batch_size (per worker) when neither batch size is set
ModelConfig = config_union(TRAINED)  # every trained model's config, picked by ``model.name``
ADAM_ON_CPU = (
    "optim.sparse=adam: TorchRec's fused Adam runs only on GPUs. On CPU use optim.sparse=rowwise_adagrad "
    "(the default), adagrad or sgd, or train on GPU workers with ray.use_gpu=true"
)


@dataclass
class TrainLoopConfig:
    epochs: Positive[int] = 10
    # rows a step: ``global_batch_size`` over all workers (the same whatever the number of workers:
    # elastic runs keep their learning dynamics), or ``batch_size`` per worker (the global batch is
    # this × the workers); at most one of the two; neither: batch_size 8192
    batch_size: Positive[int] | None = None
    global_batch_size: Positive[int] | None = None
    eval_batch_size: Positive[int] = 65536
    seed: NonNegative[int] = 0
    early_stopping_metric: str | None = None  # e.g. val_rmse; None = train all epochs
    early_stopping_mode: Literal["min", "max"] = "min"
    patience: Positive[int] = 3
    restore_best: bool = True  # test and export the best validation epoch, not the last
    export_embeddings: bool = True
    # the order of an epoch's training rows on a worker (distrec/train/batches.py): "shuffle", any
    # row anywhere; "blocks", FPSG's block order: users and items cut into ``order_blocks`` id
    # ranges each, the (user range, item range) blocks in a random order, the rows shuffled within
    # each, so a stretch of steps reads and writes the embedding rows of one block
    order: Literal["shuffle", "blocks"] = "shuffle"
    order_blocks: Annotated[int, Bound(ge=2, le=255)] = 8

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.global_batch_size is not None:
            raise ValueError(
                f"train.batch_size={self.batch_size} (rows per worker) and train.global_batch_size="
                f"{self.global_batch_size} (rows over all workers) both set the batch: keep one"
            )
        if self.batch_size is None and self.global_batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE

    def global_batch(self, world: int) -> int:
        """Rows a training step over ``world`` workers: ``global_batch_size``, or ``batch_size`` × world."""
        if self.global_batch_size is None:
            return int(self.batch_size) * world  # type: ignore[arg-type]
        if self.global_batch_size < world:
            raise UserError(
                f"train.global_batch_size={self.global_batch_size} is smaller than the {world} workers: "
                "each worker needs at least one row a step"
            )
        return self.global_batch_size


@dataclass
class OptimConfig:
    sparse: Literal["sgd", "adagrad", "rowwise_adagrad", "adam"] = "rowwise_adagrad"
    sparse_lr: Positive[float] = 0.05
    dense: Literal["sgd", "adagrad", "adam"] = "adam"
    dense_lr: Positive[float] = 0.01
    eps: Positive[float] = 1e-8


@dataclass
class ShardingConfig:
    types: dict[str, str] = field(default_factory=dict)  # table -> sharding type the planner must use
    memory_budget_gb: Positive[float] | None = None  # per worker; None = the machine's memory

    def __post_init__(self) -> None:
        for table, kind in self.types.items():
            if kind not in SHARDING_TYPES:
                raise ValueError(f"sharding.types.{table}: {kind!r} is not one of {list(SHARDING_TYPES)}")


@dataclass
class RankingTaskConfig:
    """How top-k models (``task = "ranking"``) train and are scored (distrec/train/ranking_task.py)."""

    loss: Literal["bpr", "sampled_softmax"] = "bpr"
    negatives: Positive[int] = 1  # sampled per positive; bpr averages over them, sampled_softmax ranks the positive among them
    sampler: Literal["uniform", "popularity"] = "uniform"
    popularity_alpha: NonNegative[float] = 0.75  # sampler=popularity: P(item) ∝ training count^alpha
    eval: RankingConfig = field(default_factory=lambda: RankingConfig(block_users=1024))


@dataclass
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    output_dir: str
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    ranking: RankingTaskConfig = field(default_factory=RankingTaskConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        watch = self.train.early_stopping_metric or ""
        if (
            watch.startswith(("val_hr", "val_ndcg", "val_recall", "val_precision", "val_psp", "val_mrr", "val_auc"))
            and self.train.early_stopping_mode != "max"
        ):
            raise ValueError(f"train.early_stopping_metric={watch} is better when higher: set train.early_stopping_mode=max")
        if getattr(self.model, "device", None) == "cuda" and not self.ray.use_gpu:
            raise ValueError("model.device=cuda needs ray.use_gpu=true (a worker without a GPU sees none)")
        if self.ray.elastic:
            loop = model_spec(self.model).loop
            if loop == "als":
                raise ValueError(
                    "ray.num_workers: [min, max] (elastic) needs a checkpoint that restores on another number of "
                    "workers; ALS's holds each worker's own factor rows. Give ALS a fixed ray.num_workers"
                )
            if loop == "tables" and self.train.global_batch_size is None:
                raise ValueError(
                    "ray.num_workers: [min, max] (elastic) changes the number of workers, and train.batch_size is per "
                    "worker: set train.global_batch_size (rows a step over all workers) so a resize keeps the batch"
                )
        if self.train.order == "blocks":
            spec = model_spec(self.model)
            if spec.loop != "tables" or spec.task == "retrieval":
                raise ValueError(
                    f"train.order=blocks orders an epoch's (user, item) rows, which model.name={self.model.name} does "
                    "not train on (its loop reads whole users or histories): remove train.order"
                )
        if getattr(self.model, "bias_in_factor_row", False) and self.optim.sparse == "rowwise_adagrad":
            raise ValueError(
                "model.bias_in_factor_row=true needs an element-wise optimizer (optim.sparse=sgd or adagrad): "
                "with rowwise_adagrad the bias would share its row's accumulator with the factors"
            )
