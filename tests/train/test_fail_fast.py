"""Errors a retry cannot fix end a Ray Train run after its first attempt, through a real local
Ray; other worker errors are still retried ``ray.max_failures`` times. A run that failed before
writing anything leaves no output directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from ray.train.v2.api.callback import UserCallback

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError, UserError
from distrec.runtime.config import RayConfig
from distrec.runtime.ray import run_workers
from distrec.train.config import TrainConfig
from distrec.train.run import _removed_if_unwritten
from distrec.train.run import train as fit
from tests.helpers import stored_file, tiny_synthetic


def _attempts(path: Path) -> UserCallback:
    """A callback that appends one line per failed attempt to ``path`` (it runs in the Ray Train
    controller, on this machine): the workers' error types."""

    class Attempts(UserCallback):
        def after_exception(self, run_context, worker_exceptions):
            with open(path, "a") as f:
                f.write(" ".join(sorted(type(e).__name__ for e in worker_exceptions.values())) + "\n")

    return Attempts()


def _failing_entry(error: type[Exception]):
    """Rank 1 raises ``error`` on every attempt while rank 0 waits in a collective; each attempt
    leaves a marker file."""

    def entry(payload):
        import torch.distributed as dist

        rank = dist.get_rank()
        Path(payload["markers"], f"rank{rank}-{uuid.uuid4().hex}").touch()
        if rank == 1:
            raise error("shard part-00003.parquet: sha256 does not match the manifest")
        dist.barrier()

    return entry


@pytest.mark.slow
@pytest.mark.parametrize("error, max_failures, attempts", [(DataError, 2, 1), (RuntimeError, 1, 2)])
def test_a_worker_error_no_retry_can_fix_ends_the_run_at_its_first_attempt(local_ray, tmp_path, error, max_failures, attempts):
    markers, log = tmp_path / "markers", tmp_path / "attempts.txt"
    markers.mkdir()
    cfg = RayConfig(num_workers=2, storage_path=str(tmp_path / "ray"), max_failures=max_failures)
    expected = UserError if error is RuntimeError else error  # an error retried to the end is a UserError
    with pytest.raises(expected, match="part-00003.parquet: sha256 does not match") as e:
        run_workers(
            _failing_entry(error), {"markers": str(markers)}, cfg=cfg, name=f"fail-{error.__name__}", callbacks=[_attempts(log)]
        )
    assert error is RuntimeError or type(e.value) is error  # the worker's own exception, not a wrapper
    assert len(list(markers.glob("rank1-*"))) == attempts  # 1 + max_failures for an error a retry may fix
    assert len(log.read_text().splitlines()) == attempts
    assert error.__name__ in log.read_text()


@pytest.fixture(scope="module")
def corrupt_dataset(tmp_path_factory) -> str:
    """A tiny dataset whose shards keep their sizes (the driver's check passes) but have the
    middle half of their bytes overwritten: the workers' reads fail their page checksums."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    tiny_synthetic(str(out), ratings=6000, users=200, items=100, rows_per_shard=3000)
    shards = [Path(stored_file(str(out), name)) for name in InteractionDataset(str(out)).parts]
    assert shards
    for shard in shards:
        data = bytearray(shard.read_bytes())
        quarter = len(data) // 4
        data[quarter : 3 * quarter] = bytes(2 * quarter)
        shard.write_bytes(bytes(data))
    return str(out)


def _train_config(data: str, out: Path, tmp_path: Path) -> TrainConfig:
    return from_dict(
        TrainConfig,
        {
            "data": {"path": data, "verify": "size"},
            "model": {"name": "mf", "dim": 8},
            "train": {"epochs": 2, "batch_size": 512},
            "ray": {"num_workers": 2, "storage_path": str(tmp_path / "ray"), "max_failures": 2},
            "output_dir": str(out),
        },
    )


@pytest.mark.slow
def test_a_corrupt_shard_ends_training_at_once_and_leaves_no_output_dir(local_ray, corrupt_dataset, tmp_path):
    out = tmp_path / "new" / "run"  # neither exists yet
    log = tmp_path / "attempts.txt"
    with pytest.raises(DataError, match=r"part-\d+\.parquet: corrupt or unreadable Parquet"):
        fit(_train_config(corrupt_dataset, out, tmp_path), callbacks=[_attempts(log)])
    assert len(log.read_text().splitlines()) == 1 and "DataError" in log.read_text()
    assert not (tmp_path / "new").exists()  # the lock, the run's directory and the parent it made: gone


@pytest.mark.parametrize("made", [False, True])
def test_a_failed_run_removes_only_the_empty_directories_it_made(tmp_path, made):
    """What fit() wraps the run in: a directory that was there, or one the run wrote into, stays."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    out = existing / "a" / "b" if made else existing
    with pytest.raises(DataError), _removed_if_unwritten(str(out)):
        out.mkdir(parents=True, exist_ok=True)
        (out / "_writing.lock").write_text("{}")
        (out / "_writing.lock").unlink()  # the lock is released before the check
        raise DataError("worker failed")
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    wrote = tmp_path / "wrote"
    with pytest.raises(DataError), _removed_if_unwritten(str(wrote / "run")):
        (wrote / "run").mkdir(parents=True)
        (wrote / "run" / "plan.txt").write_text("partial output")
        raise DataError("worker failed")
    assert (wrote / "run" / "plan.txt").read_text() == "partial output"
