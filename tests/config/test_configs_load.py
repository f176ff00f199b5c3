"""Every YAML under configs/ loads into its job's dataclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.compare.config import CompareConfig
from distrec.compress.config import CompressConfig
from distrec.config import load_config
from distrec.distill.config import DistillConfig
from distrec.fit.config import FitConfig
from distrec.train.config import TrainConfig
from distrec.tune.config import SweepConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
JOBS = {
    "mf": TrainConfig,
    "ncf": TrainConfig,
    "glocal_k": TrainConfig,
    "mf_bpr": TrainConfig,
    "neumf": TrainConfig,
    "lightgcn": TrainConfig,
    "two_tower": TrainConfig,
    "als": TrainConfig,
    "compress": CompressConfig,
    "tune": SweepConfig,
    "ease": FitConfig,
    "infae": FitConfig,
    "compare": CompareConfig,
    "distill": DistillConfig,
}


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads(path):
    job = path.relative_to(CONFIGS).parts[0]
    assert job in JOBS, f"{path}: no job dataclass registered for configs/{job}/ in this test"
    load_config(JOBS[job], path)
