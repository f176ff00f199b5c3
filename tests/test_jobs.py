"""The job registry: every entry resolves to its code, a sweep can name exactly its jobs, and
locations are made absolute in one place."""

from __future__ import annotations

import os
import typing

import pytest

from distrec.config import from_dict
from distrec.jobs import JOBS, absolute_paths, get_job
from distrec.tune.config import SweepConfig


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_entry_resolves(name):
    job = get_job(name)
    assert job.config.__module__ == f"distrec.{name}.config"
    for ref in (job.run_ref, job.check_ref, *([job.worker_ref] if job.worker_ref else [])):
        module, _, attribute = ref.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute)), ref
    if job.worker_ref:
        assert callable(job.worker) and "ray.storage_path" in job.paths
    with pytest.raises(ValueError, match="no job 'nope'"):
        get_job("nope")


def test_a_sweep_takes_the_registered_jobs():
    assert set(typing.get_args(typing.get_type_hints(SweepConfig)["job"])) == set(JOBS)


def test_paths_are_made_absolute_and_uris_and_null_sections_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(JOBS["distill"].config, {"data": {"path": "data"}, "output_dir": "s3://bucket/out"})
    assert cfg.ray is None
    JOBS["distill"].absolute(cfg)
    assert cfg.data.path == os.path.join(str(tmp_path), "data") and cfg.output_dir == "s3://bucket/out"
    train = from_dict(JOBS["train"].config, {"data": {"path": "d"}, "model": {"name": "mf"}, "output_dir": "o"})
    absolute_paths(train, ("ray.storage_path",))
    assert train.ray.storage_path == os.path.join(str(tmp_path), "runs/ray") and train.output_dir == "o"
