"""Hostile checkpoints: planted pickles never execute and files outside the checkpoint are never read.

A real checkpoint is saved on a gloo rank, then tampered with the way someone with write access
to the run's storage could: a malicious DCP ``.metadata``, valid metadata that routes an entry
to a pickle (which DCP itself would load with ``weights_only=False``), metadata naming files
outside the folder, and a malicious ``dense_optim.pt``. Each load must fail with a DataError,
and the payload (which would create a marker file) must not have run.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil

import pytest
import torch

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.models.registry import ModelContext, build_model
from distrec.storage import DataError
from distrec.train.checkpoint import DENSE, _MetadataUnpickler, load_checkpoint, save_checkpoint
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.sharding import shard_model
from tests.helpers import run_ranks, tiny_synthetic


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that a pickle executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model(data: str):
    ds = InteractionDataset(data)
    cfg = from_dict(TrainConfig, {"data": {"path": data}, "model": {"name": "mf", "dim": 8}, "output_dir": "unused"})
    model = build_model(cfg.model, ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5), torch.device("meta"))
    dmp, _ = shard_model(model, optim=OptimConfig(), sharding=ShardingConfig(), device=torch.device("cpu"), seed=0)
    return dmp, torch.optim.Adam([dmp.module.mean], lr=0.01)


def _metadata(ckpt: str):
    with open(os.path.join(ckpt, ".metadata"), "rb") as f:
        return _MetadataUnpickler(io.BytesIO(f.read())).load()


def _tamper_and_load(data: str, root: str) -> dict[str, str]:
    """On one gloo rank: save a checkpoint, tamper with copies of it, load each; the error messages."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    dmp, opt = _model(data)
    good = os.path.join(root, "good")
    save_checkpoint(good, dmp=dmp, dense_opt=opt, progress={"epoch": 1})
    assert load_checkpoint(good, dmp=dmp, dense_opt=opt) == {"epoch": 1}  # the untampered one loads
    marker = os.path.join(root, "payload-ran")

    def variant(name: str, change) -> str:
        ckpt = os.path.join(root, name)
        shutil.copytree(good, ckpt)
        change(ckpt)
        with pytest.raises(DataError) as info:
            load_checkpoint(ckpt, dmp=dmp, dense_opt=opt)
        return str(info.value)

    def write_metadata(ckpt: str, metadata) -> None:
        with open(os.path.join(ckpt, ".metadata"), "wb") as f:
            pickle.dump(metadata, f)

    def malicious_metadata(ckpt: str) -> None:
        with open(os.path.join(ckpt, ".metadata"), "wb") as f:
            pickle.dump(_Payload(marker), f)

    def bytes_entry(ckpt: str) -> None:  # valid metadata; "model.mean" now says: unpickle evil.distcp
        md = _metadata(ckpt)
        torch.save(_Payload(marker), os.path.join(ckpt, "evil.distcp"))
        size = os.path.getsize(os.path.join(ckpt, "evil.distcp"))
        md.state_dict_metadata["model.mean"] = BytesStorageMetadata()
        md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != "model.mean"}
        md.storage_data[MetadataIndex("model.mean")] = _StorageInfo(relative_path="evil.distcp", offset=0, length=size)
        write_metadata(ckpt, md)

    def outside(path: str):
        def change(ckpt: str) -> None:
            md = _metadata(ckpt)
            md.storage_data = {k: _StorageInfo(relative_path=path, offset=v.offset, length=v.length) for k, v in md.storage_data.items()}
            write_metadata(ckpt, md)

        return change

    def malicious_dense(ckpt: str) -> None:
        torch.save(_Payload(marker), os.path.join(ckpt, DENSE))

    errors = {
        "metadata": variant("metadata", malicious_metadata),
        "bytes_entry": variant("bytes_entry", bytes_entry),
        "dotdot": variant("dotdot", outside("../good/__0_0.distcp")),
        "absolute": variant("absolute", outside(os.path.join(good, "__0_0.distcp"))),
        "dense": variant("dense", malicious_dense),
    }
    assert not os.path.exists(marker), "a planted pickle was executed"
    return errors


def test_planted_pickles_and_escaping_paths_are_refused(tmp_path):
    data = str(tmp_path / "data")
    tiny_synthetic(data)
    errors = run_ranks(_tamper_and_load, 1, data, str(tmp_path / "ckpt"))[0]
    assert "metadata/.metadata: refused checkpoint metadata" in errors["metadata"]
    assert re.search(r"may not contain (io|builtins)\.open", errors["metadata"])
    assert "refused checkpoint entry 'model.mean'" in errors["bytes_entry"]
    assert "'../good/__0_0.distcp' is not a plain relative path" in errors["dotdot"]
    assert "is not a plain relative path" in errors["absolute"]
    assert f"{DENSE}: refused" in errors["dense"]
    assert not (tmp_path / "ckpt" / "payload-ran").exists()
