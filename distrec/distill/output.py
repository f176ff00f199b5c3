"""The synthetic users on storage: one Parquet table of the non-zero entries (``user`` int64,
``item`` int64, ``weight`` float32 in (0, 1]) plus the manifest, written with
``DirectoryWriter`` (manifest last) and read back verified with ``StoredDirectory``.

Weights, not 0/1: Distill-CF's users are the clamped sums of Gumbel-softmax draws, and ∞-AE
uses them as they are (``InfiniteAE.on_support``). ``min_weight`` drops the faint entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from distrec.errors import DataError
from distrec.storage import DirectoryWriter, StoredDirectory
from distrec.storage.reader import Verify

__all__ = ["KIND", "write_synthetic", "read_synthetic"]

KIND = "distilled-users"
SCHEMA_VERSION = 1
TABLE = "users.parquet"


def write_synthetic(uri: str, x: torch.Tensor, *, min_weight: float = 0.0, meta: dict[str, Any] | None = None) -> int:
    """Write ``x`` [n, I] (values in [0, 1]); returns the number of entries written."""
    values = x.detach().float().cpu().numpy()
    user, item = np.nonzero(values > min_weight)
    table = pa.table(
        {
            "user": pa.array(user.astype(np.int64)),
            "item": pa.array(item.astype(np.int64)),
            "weight": pa.array(values[user, item].astype(np.float32)),
        }
    )
    with DirectoryWriter(uri, kind=KIND, schema_version=SCHEMA_VERSION) as writer:
        writer.write_table(TABLE, table)
        writer.commit(
            {"users": int(x.shape[0]), "items": int(x.shape[1]), "entries": len(user), "min_weight": min_weight, **(meta or {})}
        )
    return len(user)


def read_synthetic(uri: str, *, verify: Verify = "size") -> tuple[torch.Tensor, dict[str, Any]]:
    """The synthetic users as a dense matrix [n, I] (n is the budget: small) and the manifest's meta."""
    store = StoredDirectory(uri, kind=KIND, schema_version=SCHEMA_VERSION, verify=verify)
    n, items = int(store.meta["users"]), int(store.meta["items"])
    table = store.read_table(TABLE)
    user, item = table.column("user").to_numpy().copy(), table.column("item").to_numpy().copy()  # Arrow's buffers are read-only
    if len(user) and (user.min() < 0 or user.max() >= n or item.min() < 0 or item.max() >= items):
        raise DataError(f"{uri}/{TABLE}: a user or item index is outside {n} users × {items} items")
    x = torch.zeros(n, items)
    x[torch.from_numpy(user), torch.from_numpy(item)] = torch.tensor(table.column("weight").to_numpy())
    return x, dict(store.meta)
