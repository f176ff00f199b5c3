"""Hostile checkpoints: planted pickles never execute and files outside the checkpoint are never read.

A real checkpoint is saved on gloo ranks with real TorchRec sharding, then tampered with the way
someone with write access to the run's storage could: pickles that run a shell command planted
over DCP's ``.metadata`` and over its JSON description ``dcp_metadata.json`` (the issue's exact
``STACK_GLOBAL`` bypass of an allow-list, a nested attribute, ``builtins.eval``, a genuine DCP
``Metadata`` carrying a ``__reduce__``), a description that routes an entry to a pickle (which DCP
itself would load with ``weights_only=False``), paths leaving the folder, and a malicious
``dense_optim.pt``. Each load must fail with a DataError naming the file, and the payload (which
would create a marker file) must not have run. The payloads are first shown to be live: plain
``pickle.loads`` runs each of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from torch.distributed.checkpoint.metadata import Metadata

from distrec.config import from_dict
from distrec.data.dataset import InteractionDataset
from distrec.errors import DataError
from distrec.models.registry import build_model
from distrec.models.spec import ModelContext
from distrec.runtime.checkpoint import DENSE, MODEL, load_checkpoint, load_model_checkpoint, save_checkpoint
from distrec.runtime.dcp_metadata import DCP_METADATA, METADATA_JSON, read_metadata
from distrec.train.config import OptimConfig, ShardingConfig, TrainConfig
from distrec.train.sharding import shard_model
from tests.faults import REPO, python_env
from tests.helpers import run_ranks, tiny_synthetic


def _short_unicode(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def _stack_global_call(module: str, name: str, argument: str) -> bytes:
    """Protocol 4: ``module``'s (dotted) attribute ``name``, called with one string argument."""
    return (
        b"\x80\x04" + _short_unicode(module) + _short_unicode(name) + b"\x93" + _short_unicode(argument) + b"\x85" + b"R" + b"."
    )


class _Shell:
    """Pickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that a pickle executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


PAYLOADS = {
    # the issue's repro: a name inside an allowed DCP module that resolves to os.system
    "issue": lambda marker: _stack_global_call("torch.distributed.checkpoint.filesystem", "os.system", f"touch {marker}"),
    # a longer attribute chain from another allowed module
    "nested_attribute": lambda marker: _stack_global_call("torch.distributed.checkpoint.metadata",
                                                          "torch.serialization.os.system", f"touch {marker}"),
    "builtins_eval": lambda marker: _stack_global_call("builtins", "eval", f"__import__('os').system('touch {marker}')"),
    # an instance of the class the metadata must be, whose contents reduce to a shell command
    "reduce_in_allowed_class": lambda marker: pickle.dumps(Metadata(state_dict_metadata={},
                                                                    planner_data=_Shell(f"touch {marker}"))),
}  # fmt: skip


def test_the_payloads_run_under_plain_pickle(tmp_path):
    """Without distrec's reader each payload does run: the refusals below are not vacuous."""
    for name, payload in PAYLOADS.items():
        marker = tmp_path / f"ran-{name}"
        pickle.loads(payload(marker))
        assert marker.exists(), name


def _model(data: str, seed: int = 0):
    ds = InteractionDataset(data)
    cfg = from_dict(TrainConfig, {"data": {"path": data}, "model": {"name": "mf", "dim": 8}, "output_dir": "unused"})
    model = build_model(
        cfg.model, ModelContext(num_users=ds.num_users, num_items=ds.num_items, global_mean=3.5), torch.device("meta")
    )
    dmp, _ = shard_model(model, optim=OptimConfig(), sharding=ShardingConfig(), device=torch.device("cpu"), seed=seed)
    return dmp, torch.optim.Adam([dmp.module.mean], lr=0.01)


def _described(ckpt: str) -> dict:
    with open(os.path.join(ckpt, METADATA_JSON)) as f:
        return json.load(f)


def _describe(ckpt: str, doc: dict) -> None:
    with open(os.path.join(ckpt, METADATA_JSON), "w") as f:
        json.dump(doc, f)


def _tamper_and_load(data: str, root: str) -> dict[str, str]:
    """On one gloo rank: save a checkpoint, tamper with copies of it, load each; the error messages
    (or "loaded" for a copy that must still load)."""
    dmp, opt = _model(data)
    good = os.path.join(root, "good")
    save_checkpoint(good, dmp=dmp, dense_opt=opt, progress={"epoch": 1})
    assert load_checkpoint(good, dmp=dmp, dense_opt=opt) == {"epoch": 1, "world": 1}  # the untampered one loads (and its saver)
    marker = os.path.join(root, "payload-ran")

    def variant(name: str, change) -> str:
        ckpt = os.path.join(root, name)
        shutil.copytree(good, ckpt)
        change(ckpt)
        try:
            load_checkpoint(ckpt, dmp=dmp, dense_opt=opt)
        except DataError as e:
            return str(e)
        return "loaded"

    def plant(target: str, payload: bytes):
        def change(ckpt: str) -> None:
            with open(os.path.join(ckpt, target), "wb") as f:
                f.write(payload)

        return change

    def consistent_pickle(ckpt: str) -> None:  # the payload in .metadata, and the JSON vouching for it
        payload = PAYLOADS["issue"](marker)
        plant(DCP_METADATA, payload)(ckpt)
        _describe(ckpt, {**_described(ckpt), "metadata_sha256": hashlib.sha256(payload).hexdigest()})

    def bytes_entry(ckpt: str) -> None:  # "model.mean" now says: unpickle evil.distcp
        torch.save(_Payload(marker), os.path.join(ckpt, "evil.distcp"))
        doc = _described(ckpt)
        doc["state_dict_metadata"]["model.mean"] = {"type": "bytes"}
        doc["storage_data"] = [item for item in doc["storage_data"] if item["index"]["fqn"] != "model.mean"] + [{
            "index": {"fqn": "model.mean", "offset": None, "index": None},
            "info": {"relative_path": "evil.distcp", "offset": 0, "length": os.path.getsize(os.path.join(ckpt, "evil.distcp")),
                     "transform_descriptors": None},
        }]  # fmt: skip
        _describe(ckpt, doc)

    def edit(change_doc):
        def change(ckpt: str) -> None:
            doc = _described(ckpt)
            change_doc(doc)
            _describe(ckpt, doc)

        return change

    def paths(path: str):
        return edit(lambda doc: [item["info"].update(relative_path=path) for item in doc["storage_data"]])

    def dtype(doc: dict) -> None:
        doc["state_dict_metadata"]["model.mean"]["properties"]["dtype"] = "os"  # torch's own `os` module

    def unplaced(doc: dict) -> None:
        doc["storage_data"] = [item for item in doc["storage_data"] if item["index"]["fqn"] != "model.mean"]

    errors = {f"{name}@{target}": variant(f"{name}-{target}", plant(target, payload(marker)))
              for name, payload in PAYLOADS.items() for target in (DCP_METADATA, METADATA_JSON)}  # fmt: skip
    errors.update(
        consistent_pickle=variant("consistent", consistent_pickle),
        no_json=variant("no_json", lambda ckpt: os.remove(os.path.join(ckpt, METADATA_JSON))),
        bytes_entry=variant("bytes_entry", bytes_entry),
        dotdot=variant("dotdot", paths("../good/__0_0.distcp")),
        absolute=variant("absolute", paths(os.path.join(good, "__0_0.distcp"))),
        dtype=variant("dtype", edit(dtype)),
        unplaced=variant("unplaced", edit(unplaced)),
        dense=variant("dense", plant(DENSE, PAYLOADS["issue"](marker))),
        dense_reduce=variant("dense_reduce", lambda ckpt: torch.save(_Payload(marker), os.path.join(ckpt, DENSE))),
    )
    assert not os.path.exists(marker), "a planted pickle was executed"
    return errors


def test_planted_pickles_and_escaping_paths_are_refused(tmp_path):
    data = str(tmp_path / "data")
    tiny_synthetic(data)
    root = tmp_path / "ckpt"
    errors = run_ranks(_tamper_and_load, 1, data, str(root))[0]
    assert not (root / "payload-ran").exists()
    for name in PAYLOADS:
        assert (
            f"{root}/{name}-{DCP_METADATA}/{DCP_METADATA}: changed after the checkpoint was written"
            in errors[f"{name}@{DCP_METADATA}"]
        )
        assert f"{root}/{name}-{METADATA_JSON}/{METADATA_JSON}: not JSON" in errors[f"{name}@{METADATA_JSON}"]
    # a pickle that the JSON vouches for is still never unpickled: the checkpoint loads from the JSON
    assert errors["consistent_pickle"] == "loaded"
    assert f"no_json/{METADATA_JSON}: missing" in errors["no_json"]
    assert "refused checkpoint entry 'model.mean'" in errors["bytes_entry"]
    assert "'../good/__0_0.distcp' is not a plain relative path" in errors["dotdot"]
    assert "is not a plain relative path" in errors["absolute"]
    assert (
        f"dtype/{METADATA_JSON}: state_dict_metadata['model.mean'].properties.dtype: expected the name of a torch.dtype"
        in errors["dtype"]
    )
    assert f"unplaced/{METADATA_JSON}: no storage_data entry holds 'model.mean'" in errors["unplaced"]
    assert f"dense/{DENSE}: refused" in errors["dense"]
    assert f"dense_reduce/{DENSE}: refused" in errors["dense_reduce"]


def _local_shards(dmp) -> dict[str, torch.Tensor]:
    return {f"{key}/{i}": shard.tensor.detach().clone()
            for key, value in dmp.state_dict().items() if hasattr(value, "local_shards")
            for i, shard in enumerate(value.local_shards())}  # fmt: skip


def _round_trip(data: str, root: str) -> bool:
    """On each of 2 ranks: the metadata rebuilt from the JSON equals the one DCP pickled, for a
    TorchRec checkpoint (tables on different ranks) and for a DTensor split in row chunks beside
    non-tensor entries and list positions; a model initialised with another seed restores the
    saved shards from it, and the DTensor its rows."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from distrec.runtime.checkpoint import _JsonMetadataReader, _SafeLoadPlanner
    from distrec.runtime.dcp_metadata import write_metadata

    def pickled(directory: str):
        with open(os.path.join(directory, DCP_METADATA), "rb") as f:
            metadata = pickle.load(f)  # written a moment ago by this test: trusted here, never in distrec
        metadata.storage_meta.checkpoint_id = str(metadata.storage_meta.checkpoint_id)  # a path object in the pickle
        return metadata

    dmp, opt = _model(data)
    torchrec = os.path.join(root, "torchrec")
    save_checkpoint(torchrec, dmp=dmp, dense_opt=opt, progress={"epoch": 1})
    dist.barrier()  # rank 0 writes the JSON (here both ranks share one folder)
    assert read_metadata(torchrec) == pickled(torchrec)
    other, other_opt = _model(data, seed=1)
    saved, before = _local_shards(dmp), _local_shards(other)
    assert any(not torch.equal(saved[key], before[key]) for key in saved)
    load_checkpoint(torchrec, dmp=other, dense_opt=other_opt)
    restored = _local_shards(other)
    assert restored.keys() == saved.keys()
    for key in saved:
        torch.testing.assert_close(restored[key], saved[key], rtol=0, atol=0)

    rows = torch.arange(24, dtype=torch.float64).reshape(6, 4)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    state = {"rows": distribute_tensor(rows, mesh, [Shard(0)]), "step": 7, "groups": [{"lr": 0.5, "names": ["a", "b"]}]}
    plain = os.path.join(root, "dtensor")
    metadata = dcp.save(state, checkpoint_id=plain)
    if dist.get_rank() == 0:
        write_metadata(plain, metadata)
    dist.barrier()
    rebuilt = read_metadata(plain)
    assert rebuilt == pickled(plain)
    assert [list(chunk.offsets) for chunk in rebuilt.state_dict_metadata["rows"].chunks] == [[0, 0], [3, 0]]
    assert rebuilt.planner_data["groups.0.lr"] == ("groups", 0, "lr")
    empty = {"rows": distribute_tensor(torch.zeros_like(rows), mesh, [Shard(0)]), "step": 0, "groups": [{"lr": 0.0, "names": []}]}
    dcp.load(empty, storage_reader=_JsonMetadataReader(plain, metadata=rebuilt), planner=_SafeLoadPlanner())
    torch.testing.assert_close(empty["rows"].full_tensor(), rows, rtol=0, atol=0)
    assert empty["step"] == 7 and empty["groups"] == [{"lr": 0.5, "names": ["a", "b"]}]
    return True


def test_the_json_describes_exactly_what_dcp_saved(tmp_path):
    data = str(tmp_path / "data")
    tiny_synthetic(data)
    assert run_ranks(_round_trip, 2, data, str(tmp_path / "ckpt")) == [True, True]


def test_other_checkpoint_readers_refuse_planted_pickles(tmp_path):
    """The dense loop's model.pt, Distill-CF's state.pt and the compressor's optim.pt: the issue's
    payload is refused with a DataError naming the file, and never runs."""
    from distrec.compress.worker import MODEL as MODEL_SAFETENSORS
    from distrec.compress.worker import OPTIM, _load_checkpoint
    from distrec.distill.worker import STATE, load_distill_state

    marker = tmp_path / "payload-ran"
    payload = PAYLOADS["issue"](marker)

    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / MODEL).write_bytes(payload)
    (dense / "progress.json").write_text('{"epoch": 1}')
    with pytest.raises(DataError, match=f"{dense}/{MODEL}: refused"):
        load_model_checkpoint(str(dense), model=torch.nn.Linear(2, 2))

    distill = tmp_path / "distill"
    distill.mkdir()
    (distill / STATE).write_bytes(payload)
    (distill / "progress.json").write_text('{"step": 1}')
    logits = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(DataError, match=f"{distill}/{STATE}: refused"):
        load_distill_state(str(distill), logits=logits, optimizer=torch.optim.Adam([logits]))

    compress = tmp_path / "compress"
    compress.mkdir()
    (compress / OPTIM).write_bytes(payload)
    (compress / "progress.json").write_text('{"current": "user-8x"}')
    (compress / MODEL_SAFETENSORS).write_bytes(payload)
    with pytest.raises(DataError, match=f"{compress}/{MODEL_SAFETENSORS}: not a readable safetensors file"):
        _load_checkpoint(str(compress))
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(compress / MODEL_SAFETENSORS))
    with pytest.raises(DataError, match=f"{compress}/{OPTIM}: refused"):
        _load_checkpoint(str(compress))
    assert not marker.exists()


@pytest.mark.slow
def test_the_issue_repro_through_jobs_train(tmp_path, session_ray_env):
    """The issue's repro as a user runs it: train one epoch, plant the payload over the
    checkpoint's .metadata, run the same command again: exit 2 with an error naming the file, and
    the file the payload would create is absent. Both runs are drivers on the session's Ray
    (where the workers run is not what this is about; an embedded start costs both cores)."""
    data = str(tmp_path / "data")
    tiny_synthetic(data, ratings=6_000)
    command = [
        sys.executable, "jobs/train.py", "--config", "configs/mf/demo.yaml", "--quiet", f"data.path={data}",
        f"output_dir={tmp_path / 'out'}", f"ray.storage_path={tmp_path / 'ray'}", "ray.name=pwn", "ray.max_failures=0",
        "ray.num_workers=1", "train.epochs=1", "train.early_stopping_metric=null", "model.dim=8",
    ]  # fmt: skip
    env = python_env(**session_ray_env)
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    planted = sorted((tmp_path / "ray" / "pwn").glob(f"checkpoint_*/{DCP_METADATA}"))
    assert planted
    marker = tmp_path / "PWNED"
    for path in planted:
        path.write_bytes(PAYLOADS["issue"](marker))
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert again.returncode == 2, (again.stdout + again.stderr)[-3000:]
    # the job's own message (Ray's log of the worker, traceback included, streams in around it)
    errors = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, again.stderr[-3000:]
    assert f"/{DCP_METADATA}: changed after the checkpoint was written" in errors[0]  # the worker's DataError, raised as it is
    assert not marker.exists()
