"""The compressor job's config (``jobs/compress.py``), one dataclass per YAML section.

source:     {run: URI, tables: [user, item], verify: sha256}   # a training output_dir
ratios:     [4, 8]                 # compression ratios in bytes; one compressor per table and ratio
model:      {hidden: [128, 64], keep_fraction: 0.75, code_dtype: int8, ...}
fit:        {epochs: 60, batch_size: 256, lr: 0.003, ...}
holdout:    {table: user, fraction: 0.1}   # entities kept out of training, for the new-entity check
ray:        {num_workers: 2, storage_path: runs/ray, ...}   # as in the training job
tracking:   {tensorboard: false, mlflow_uri: null, ...}     # as in the training job
output_dir: URI
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from distrec.config import Bound, NonNegative, Positive
from distrec.models.compressor import CompressorConfig
from distrec.runtime.config import RayConfig
from distrec.storage.reader import Verify
from distrec.tracking import TrackingConfig

__all__ = ["SourceConfig", "CompressTrainConfig", "HoldoutConfig", "CompressConfig"]


@dataclass
class SourceConfig:
    run: str  # a training output_dir: <run>/embeddings/<table>/ and <run>/config.yaml
    tables: list[str] = field(default_factory=lambda: ["user", "item"])
    # sha256: the driver hashes every shard once before any worker starts, so a corrupt shard
    # stops the job before training (embedding tables are one row per entity, small next to
    # the interactions). "size" checks sizes only; workers still check every page's CRC.
    verify: Verify = "sha256"

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("source.tables must name at least one table")


@dataclass
class CompressTrainConfig:
    """How each compressor trains (the ``fit`` section)."""

    epochs: Positive[int] = 60
    batch_size: Positive[int] = 256  # rows per worker per step
    lr: Positive[float] = 3e-3
    weight_decay: NonNegative[float] = 1e-5
    seed: NonNegative[int] = 0
    checkpoint_every: Positive[int] = 10  # epochs between checkpoints (and one at the end of each model)


@dataclass
class HoldoutConfig:
    table: str | None = "user"  # None: train on every row
    fraction: Annotated[float, Bound(ge=0, lt=1)] = 0.1
    seed: NonNegative[int] = 0


@dataclass
class CompressConfig:
    source: SourceConfig
    output_dir: str
    ratios: list[Positive[int]] = field(default_factory=lambda: [4, 8])
    model: CompressorConfig = field(default_factory=CompressorConfig)
    fit: CompressTrainConfig = field(default_factory=CompressTrainConfig)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if not self.ratios:
            raise ValueError("ratios: give at least one compression ratio")
        if self.model.device == "cuda" and not self.ray.use_gpu:
            raise ValueError("model.device=cuda needs ray.use_gpu=true (a worker without a GPU sees none)")
        if self.holdout.table is not None and self.holdout.table not in self.source.tables:
            raise ValueError(f"holdout.table={self.holdout.table!r} is not one of source.tables {self.source.tables}")
