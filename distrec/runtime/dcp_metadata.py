"""DCP's checkpoint metadata as JSON, so that a checkpoint is restored without unpickling anything.

``torch.distributed.checkpoint`` describes what it saved in ``.metadata``: every state-dict
entry's dtype, global size and chunks (offsets and sizes), and which file, byte offset and length
hold each chunk. That file is a pickle, and unpickling it runs whatever it names, so anyone who
can write the run's storage could run code in the workers. Rank 0 therefore writes the same
description as ``dcp_metadata.json`` beside it (``write_metadata``), and a restore rebuilds DCP's
``Metadata`` dataclasses from the JSON, checking every field (``read_metadata``). ``.metadata``
itself is never unpickled: its bytes are only compared with the SHA-256 the JSON records, so a
checkpoint whose pickle was replaced is refused too (DCP's own tools, which do unpickle it, would
otherwise be handed the replacement).

The JSON mirrors ``torch.distributed.checkpoint.metadata`` field for field: global sizes and
chunk offsets rather than per-rank plans, and DCP's flattening map (``planner_data``). That is all
DCP needs to load the checkpoint on another number of workers, so resharding stays possible.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from distrec.errors import DataError
from distrec.storage.manifest import check_relative_path

__all__ = ["METADATA_JSON", "DCP_METADATA", "write_metadata", "read_metadata"]

METADATA_JSON = "dcp_metadata.json"
DCP_METADATA = ".metadata"  # DCP's pickle: written by DCP, never read by distrec
FORMAT = "distrec-dcp-metadata/1"


def write_metadata(directory: str, metadata: Metadata) -> None:
    """Rank 0, after ``dcp.save`` (which returns ``metadata`` and has written ``.metadata``)."""
    with open(os.path.join(directory, DCP_METADATA), "rb") as f:
        pickle_sha256 = hashlib.sha256(f.read()).hexdigest()
    meta = metadata.storage_meta
    doc = {
        "format": FORMAT,
        "metadata_sha256": pickle_sha256,
        "version": metadata.version,
        "state_dict_metadata": {fqn: _encode_entry(entry) for fqn, entry in metadata.state_dict_metadata.items()},
        "planner_data": None
        if metadata.planner_data is None
        else {fqn: list(path) for fqn, path in metadata.planner_data.items()},
        "storage_data": [
            {
                "index": {"fqn": index.fqn, "offset": _list(index.offset), "index": index.index},
                "info": {
                    "relative_path": info.relative_path,
                    "offset": info.offset,
                    "length": info.length,
                    "transform_descriptors": _list(info.transform_descriptors),
                },
            }
            for index, info in metadata.storage_data.items()
        ],  # fmt: skip
        "storage_meta": None
        if meta is None
        else {
            "checkpoint_id": None if meta.checkpoint_id is None else str(meta.checkpoint_id),
            "save_id": meta.save_id,
            "modules": list(meta.modules),
        },  # fmt: skip
    }
    with open(os.path.join(directory, METADATA_JSON), "w") as f:
        json.dump(doc, f)


def read_metadata(directory: str) -> Metadata:
    """DCP's ``Metadata``, rebuilt from ``dcp_metadata.json``; a DataError naming the file (and the
    field) if it is missing, not what ``write_metadata`` writes, or ``.metadata`` has changed."""
    path, pickle_path = os.path.join(directory, METADATA_JSON), os.path.join(directory, DCP_METADATA)
    for name in (path, pickle_path):
        if not os.path.exists(name):
            raise DataError(
                f"{name}: missing; distrec restores only checkpoints it wrote, with both DCP's "
                f"{DCP_METADATA} and its description {METADATA_JSON} (the pickle itself is never loaded)"
            )
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path}: not JSON ({str(e)[:200]})") from None
    d = _Decoder(path)
    d.keys(
        doc,
        "the file",
        {"format", "metadata_sha256", "version", "state_dict_metadata", "planner_data", "storage_data", "storage_meta"},
    )
    if doc["format"] != FORMAT:
        raise d.fail("format", repr(FORMAT), doc["format"])
    with open(pickle_path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != d.string(doc["metadata_sha256"], "metadata_sha256"):
            raise DataError(
                f"{pickle_path}: changed after the checkpoint was written (its SHA-256 is not the one {METADATA_JSON} records)"
            )
    entries = d.mapping(doc["state_dict_metadata"], "state_dict_metadata")
    metadata = Metadata(
        state_dict_metadata={fqn: d.entry(entry, f"state_dict_metadata[{fqn!r}]") for fqn, entry in entries.items()},
        planner_data=None if doc["planner_data"] is None else {
            fqn: tuple(d.key_path(keys, f"planner_data[{fqn!r}]"))
            for fqn, keys in d.mapping(doc["planner_data"], "planner_data").items()
        },
        storage_data=dict(
            d.storage_item(item, f"storage_data[{i}]") for i, item in enumerate(d.items(doc["storage_data"], "storage_data"))
        ),
        storage_meta=None if doc["storage_meta"] is None else d.storage_meta(doc["storage_meta"], "storage_meta"),
        version=None if doc["version"] is None else d.string(doc["version"], "version"),
    )  # fmt: skip
    for fqn, entry in metadata.state_dict_metadata.items():  # every chunk DCP may read has a place in a file
        offsets = [chunk.offsets for chunk in entry.chunks] if isinstance(entry, TensorStorageMetadata) else [None]
        for offset in offsets:
            if MetadataIndex(fqn, offset) not in metadata.storage_data:
                raise DataError(f"{path}: no storage_data entry holds {fqn!r} at offset {list(offset or [])}")
    return metadata


def _list(values: Any) -> list | None:
    return None if values is None else list(values)


def _name(value: Any) -> str:
    return str(value).removeprefix("torch.")  # torch.float32 -> "float32", torch.strided -> "strided"


def _encode_entry(entry: Any) -> dict[str, Any]:
    if isinstance(entry, BytesStorageMetadata):
        return {"type": "bytes"}
    p = entry.properties
    return {
        "type": "tensor",
        "properties": {"dtype": _name(p.dtype), "layout": _name(p.layout), "requires_grad": p.requires_grad,
                       "memory_format": _name(p.memory_format), "pin_memory": p.pin_memory},
        "size": list(entry.size),
        "chunks": [{"offsets": list(chunk.offsets), "sizes": list(chunk.sizes)} for chunk in entry.chunks],
    }  # fmt: skip


class _Decoder:
    """DCP's dataclasses from their JSON; a DataError naming the file, the field and what was expected."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, expected: str, value: Any) -> DataError:
        return DataError(f"{self.path}: {where}: expected {expected}, got {repr(value)[:80]}")

    def keys(self, value: Any, where: str, keys: set[str]) -> None:
        if not isinstance(value, dict) or set(value) != keys:
            raise self.fail(where, f"an object with the keys {sorted(keys)}", value)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object", value)
        return value

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "a list", value)
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "a string", value)
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def natural(self, value: Any, where: str) -> int:
        if type(value) is not int or value < 0:
            raise self.fail(where, "an integer >= 0", value)
        return value

    def naturals(self, value: Any, where: str) -> list[int]:
        return [self.natural(v, where) for v in self.items(value, where)]

    def key_path(self, value: Any, where: str) -> list[str | int]:
        """DCP's flattening map: the keys (strings) and list positions (integers) to an entry."""
        return [v if isinstance(v, str) else self.natural(v, where) for v in self.items(value, where)]

    def torch_value(self, value: Any, where: str, kind: type) -> Any:
        """``torch.float32`` from "float32" (looked up among torch's own values, nothing imported)."""
        found = vars(torch).get(value) if isinstance(value, str) else None
        if not isinstance(found, kind):
            raise self.fail(where, f"the name of a torch.{kind.__name__}", value)
        return found

    def entry(self, value: Any, where: str) -> TensorStorageMetadata | BytesStorageMetadata:
        if isinstance(value, dict) and value.get("type") == "bytes":
            self.keys(value, where, {"type"})
            return BytesStorageMetadata()
        self.keys(value, where, {"type", "properties", "size", "chunks"})
        if value["type"] != "tensor":
            raise self.fail(f"{where}.type", '"tensor" or "bytes"', value["type"])
        p = value["properties"]
        self.keys(p, f"{where}.properties", {"dtype", "layout", "requires_grad", "memory_format", "pin_memory"})
        properties = TensorProperties(
            dtype=self.torch_value(p["dtype"], f"{where}.properties.dtype", torch.dtype),
            layout=self.torch_value(p["layout"], f"{where}.properties.layout", torch.layout),
            requires_grad=self.boolean(p["requires_grad"], f"{where}.properties.requires_grad"),
            memory_format=self.torch_value(p["memory_format"], f"{where}.properties.memory_format", torch.memory_format),
            pin_memory=self.boolean(p["pin_memory"], f"{where}.properties.pin_memory"),
        )
        size = self.naturals(value["size"], f"{where}.size")
        chunks = []
        for i, chunk in enumerate(self.items(value["chunks"], f"{where}.chunks")):
            self.keys(chunk, f"{where}.chunks[{i}]", {"offsets", "sizes"})
            offsets = self.naturals(chunk["offsets"], f"{where}.chunks[{i}].offsets")
            sizes = self.naturals(chunk["sizes"], f"{where}.chunks[{i}].sizes")
            if len(offsets) != len(size) or len(sizes) != len(size) or any(o + s > n for o, s, n in zip(offsets, sizes, size)):
                raise self.fail(f"{where}.chunks[{i}]", f"a chunk inside the tensor's size {size}", chunk)
            chunks.append(ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes)))
        return TensorStorageMetadata(properties=properties, size=torch.Size(size), chunks=chunks)

    def storage_item(self, value: Any, where: str) -> tuple[MetadataIndex, _StorageInfo]:
        """Where one chunk (or non-tensor entry) lies: a file inside the checkpoint, offset, length."""
        self.keys(value, where, {"index", "info"})
        index, info = value["index"], value["info"]
        self.keys(index, f"{where}.index", {"fqn", "offset", "index"})
        self.keys(info, f"{where}.info", {"relative_path", "offset", "length", "transform_descriptors"})
        transforms = info["transform_descriptors"]
        key = MetadataIndex(
            fqn=self.string(index["fqn"], f"{where}.index.fqn"),
            offset=None if index["offset"] is None else self.naturals(index["offset"], f"{where}.index.offset"),
            index=None if index["index"] is None else self.natural(index["index"], f"{where}.index.index"),
        )
        return key, _StorageInfo(
            relative_path=check_relative_path(self.string(info["relative_path"], f"{where}.info.relative_path"), where=self.path),
            offset=self.natural(info["offset"], f"{where}.info.offset"),
            length=self.natural(info["length"], f"{where}.info.length"),
            transform_descriptors=None if transforms is None else [
                self.string(t, f"{where}.info.transform_descriptors")
                for t in self.items(transforms, f"{where}.info.transform_descriptors")
            ],
        )  # fmt: skip

    def storage_meta(self, value: Any, where: str) -> StorageMeta:
        self.keys(value, where, {"checkpoint_id", "save_id", "modules"})
        return StorageMeta(
            checkpoint_id=None
            if value["checkpoint_id"] is None
            else self.string(value["checkpoint_id"], f"{where}.checkpoint_id"),
            save_id=None if value["save_id"] is None else self.string(value["save_id"], f"{where}.save_id"),
            modules=[self.string(m, f"{where}.modules") for m in self.items(value["modules"], f"{where}.modules")],
        )
