"""A small biased-MF "run" to compress: a tiny synthetic dataset, user and item tables with
compressible vectors (rank 3 plus noise) and biases, split over several shards, and the run's
config.yaml, written wherever a test asks (local disk or S3 on the moto server)."""

from __future__ import annotations

import numpy as np
import pytest

from distrec.config import from_dict, to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.storage import join, write_text
from distrec.storage.embeddings import EmbeddingTable, write_embeddings
from distrec.train.config import TrainConfig
from tests.helpers import tiny_synthetic

DIM = 8


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("compress-data") / "tiny")
    tiny_synthetic(out, users=300, items=200, ratings=12_000)
    return out


def write_run(run: str, dataset: str, *, rows_per_part: int = 100) -> None:
    """``<run>/embeddings/{user,item}`` (several parts each) and ``<run>/config.yaml``."""
    data = InteractionDataset(dataset)
    train = data.read(split=None, parts=["train"])
    meta = {"model": "mf", "dataset": dataset, "split": data.resolve_split(None), "global_mean": float(train.rating.mean())}
    rng = np.random.default_rng(0)
    for table, rows in (("user", data.num_users), ("item", data.num_items)):
        vector = (rng.normal(size=(rows, 3)) @ rng.normal(size=(3, DIM)) * 0.3 + rng.normal(size=(rows, DIM)) * 0.02).astype(
            np.float32
        )
        bias = (rng.normal(size=rows) * 0.2).astype(np.float32)
        write_embeddings(
            join(run, "embeddings", table),
            EmbeddingTable(
                index=np.arange(rows),
                vector=vector,
                columns={"bias": bias},
                raw=np.arange(rows) + 1,
                meta={**meta, "table": table},
            ),
            rows_per_part=rows_per_part,
        )
    cfg = from_dict(TrainConfig, {"data": {"path": dataset}, "model": {"name": "mf", "dim": DIM}, "output_dir": run})
    write_text(join(run, "config.yaml"), to_yaml(cfg))
