"""The benchmarks' inputs, built once into the work directory and reused by later runs (outside
every timing): upstream-format source files, prepared synthetic datasets, the ∞-AE paper's ML-1M
split where this machine has it.
"""

from __future__ import annotations

import os
import shutil

__all__ = ["once", "ml25m_source", "netflix_source", "synthetic_dataset", "closed_form_dataset", "ML1M_SOURCE"]


def once(path: str, make) -> str:
    """Build ``path`` with ``make(tmp)`` unless it exists (atomically, via a rename)."""
    if not os.path.exists(path):
        tmp = f"{path}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(tmp):
            os.remove(tmp)
        make(tmp)
        os.replace(tmp, path)
    return path


def ml25m_source(work: str, rows: int) -> str:
    from distrec.bench.files import write_movielens_csv

    def make(tmp: str) -> None:
        os.makedirs(tmp)
        write_movielens_csv(f"{tmp}/ratings.csv", rows)

    return once(f"{work}/ml25m-format-{rows}", make)


def netflix_source(work: str, rows: int) -> str:
    from distrec.bench.files import write_netflix_text

    def make(tmp: str) -> None:
        os.makedirs(tmp)
        write_netflix_text(f"{tmp}/combined_data_1.txt", rows)

    return once(f"{work}/netflix-format-{rows}", make)


def synthetic_dataset(work: str, like: str | None, sizes: dict[str, int] | None = None, split: str | None = None) -> str:
    from distrec.data.prepare import PrepareConfig, prepare_dataset

    name = (like or "-".join(f"{k}{v}" for k, v in sorted((sizes or {}).items()))) + (f"-{split.split(':')[0]}" if split else "")
    return once(
        f"{work}/synthetic-{name}",
        lambda tmp: prepare_dataset(
            PrepareConfig(dataset="synthetic", out=tmp, like=like, sizes=dict(sizes or {}), splits=[split] if split else [])
        ),
    )


ML1M_SOURCE = "../shared/datasets/ml-1m-infae"  # the ∞-AE paper's ML-1M split, where this machine has it


def closed_form_dataset(work: str, like: str) -> tuple[str, str]:
    """The ∞-AE paper's ML-1M split when its files are at ``ML1M_SOURCE``, else a synthetic
    ``like``-shaped dataset with a per-user 80/10/10 split; returns (URI, what it is)."""
    from distrec.data.prepare import PrepareConfig, prepare_dataset

    if like == "ml-1m" and os.path.isdir(ML1M_SOURCE):
        make = lambda tmp: prepare_dataset(PrepareConfig(dataset="infae", out=tmp, source=ML1M_SOURCE))  # noqa: E731
        return once(f"{work}/ml-1m-infae", make), "ML-1M, the ∞-AE paper's split"
    return synthetic_dataset(work, like, split="user-ratio:0.8/0.1/0.1"), f"synthetic {like}-shaped, user-ratio 80/10/10"
