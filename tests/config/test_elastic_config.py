"""``ray.num_workers: [min, max]`` (elastic training): what it maps to, and the runs it refuses
at load because a resize would break them."""

from __future__ import annotations

import pytest

from distrec.config import ConfigError, from_dict, parse_overrides
from distrec.train.config import TrainConfig


def _train(model: str, ray: dict, **train) -> TrainConfig:
    cfg = {"data": {"path": "d"}, "model": {"name": model}, "output_dir": "o", "train": train, "ray": ray}
    return from_dict(TrainConfig, cfg, source="job.yaml")


def test_a_range_is_elastic_and_a_number_is_not():
    elastic = _train("mf", parse_overrides(["num_workers=[1,4]"]), global_batch_size=1024).ray
    assert (elastic.elastic, elastic.min_workers, elastic.max_workers) == (True, 1, 4)
    fixed = _train("mf", {"num_workers": 3}).ray
    assert (fixed.elastic, fixed.min_workers, fixed.max_workers) == (False, 3, 3)
    with pytest.raises(ConfigError, match=r"ray.num_workers: \[min, max\] with min <= max, got \[3, 2\]"):
        _train("mf", {"num_workers": [3, 2]}, global_batch_size=1024)
    with pytest.raises(ConfigError, match="key 'ray.num_workers'"):
        _train("mf", {"num_workers": [0, 2]}, global_batch_size=1024)


def test_elastic_runs_that_a_resize_would_break_are_refused_at_load():
    with pytest.raises(ConfigError, match="job.yaml: .*ALS's holds each worker's own factor rows"):
        _train("als", {"num_workers": [1, 2]})
    with pytest.raises(ConfigError, match="set train.global_batch_size"):
        _train("mf", {"num_workers": [1, 2]}, batch_size=512)
    assert _train("glocal_k", {"num_workers": [1, 2]}).ray.elastic  # the dense loop batches nothing per worker
