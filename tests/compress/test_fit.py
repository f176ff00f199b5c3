"""The compressor's worker loop on 2 real gloo ranks (no Ray): a run stopped after a checkpoint
and resumed ends with exactly the codes and weights of an uninterrupted run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from distrec.compress.codes import read_codes
from distrec.compress.config import CompressConfig
from distrec.compress.worker import compress_worker as fit_worker
from distrec.compress.worker import compressed_uri
from distrec.config import from_dict
from distrec.runtime.session import LocalSession
from tests.compress.conftest import write_run
from tests.helpers import run_ranks, stored_file, training_seed


def _fit(cfg: CompressConfig, checkpoints: str) -> dict:
    return fit_worker(cfg, LocalSession(checkpoints))


def _config(run: str, out: str) -> CompressConfig:
    return from_dict(
        CompressConfig,
        {
            "source": {"run": run, "tables": ["user"]},
            "ratios": [8],
            "model": {"hidden": [16], "token_dim": 8},
            "fit": {"epochs": 4, "batch_size": 32, "checkpoint_every": 2, "seed": training_seed()},
            "output_dir": out,
        },
    )


def _interrupted(tiny_dataset: str, tmp_path: Path) -> tuple[CompressConfig, CompressConfig, str]:
    """A whole run on 2 workers, and a second run of the same config whose only checkpoint is the
    first's after epoch 2 (as if it had been cut there): both configs and that checkpoint folder."""
    run = str(tmp_path / "run")
    write_run(run, tiny_dataset)
    full, resumed = _config(run, str(tmp_path / "full")), _config(run, str(tmp_path / "resumed"))
    ckpt_full, ckpt_resumed = tmp_path / "ckpt-full", tmp_path / "ckpt-resumed"
    run_ranks(_fit, 2, full, str(ckpt_full))
    shutil.copytree(ckpt_full / "checkpoint_00002", ckpt_resumed / "checkpoint_00002")
    return full, resumed, str(ckpt_resumed)


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(tiny_dataset, tmp_path):
    full, resumed, checkpoints = _interrupted(tiny_dataset, tmp_path)
    progress = run_ranks(_fit, 2, resumed, checkpoints)[0]
    assert progress["resumes"] == 1 and progress["finished"] == ["user-8x"]
    assert [h["model_epoch"] for h in progress["history"]["user-8x"]] == [1, 2, 3, 4]
    a, b = read_codes(compressed_uri(full, "user", 8)), read_codes(compressed_uri(resumed, "user", 8))
    assert np.array_equal(a.codes, b.codes)
    for name in ("encoder.safetensors", "decoder.safetensors"):
        assert (
            Path(stored_file(compressed_uri(full, "user", 8), name)).read_bytes()
            == Path(stored_file(compressed_uri(resumed, "user", 8), name)).read_bytes()
        )


@pytest.mark.slow
def test_a_run_saved_by_two_workers_resumes_on_one(tiny_dataset, tmp_path):
    """An elastic run that lost a worker: the compressor is replicated and each worker's rows are
    a slice of the table taken at (re)start, so the checkpoint of 2 workers goes on with 1 and
    every row is still encoded once."""
    full, resumed, checkpoints = _interrupted(tiny_dataset, tmp_path)
    progress = run_ranks(_fit, 1, resumed, checkpoints)[0]
    assert (progress["resumes"], progress["resizes"], progress["world"]) == (1, 1, 1)
    assert [h["model_epoch"] for h in progress["history"]["user-8x"]] == [1, 2, 3, 4]
    a, b = read_codes(compressed_uri(full, "user", 8)), read_codes(compressed_uri(resumed, "user", 8))
    assert np.array_equal(a.index, b.index) and len(np.unique(b.index)) == len(b.index)  # every row, once
    assert b.codes.shape == a.codes.shape
