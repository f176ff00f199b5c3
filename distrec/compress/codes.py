"""A compressed embedding table on storage, and the library calls that use it.

One committed directory per table and ratio (``<output_dir>/compressed/<table>-<ratio>x/``):

- ``part-NNNNN.parquet``: ``index`` int64, ``raw`` (dataset id), ``code`` (fixed-size list of
  int8 or float16, [c]) and the per-row scalars the source table carried (``bias``), one part per
  worker, rows in index order within a part;
- ``encoder.safetensors`` / ``decoder.safetensors``: the two halves of the trained compressor
  (``Compressor.encoder_keys`` / ``decoder_keys``); the decoder alone turns codes back into
  embeddings;
- ``_manifest.json`` (kind ``codes``): dim, code size and dtype, ratio, the model config and
  the source table's meta (``global_mean`` of a biased MF).

New entities (users the recommender adds later, folded into the same MF) are encoded with the
trained compressor, no retraining:

    encoder = load_encoder(uri); codes = compress(new_vectors, encoder)
    decoder = load_decoder(uri); vectors = decompress(codes, decoder)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import safetensors.torch
import torch

from distrec.config import from_dict
from distrec.errors import DataError
from distrec.models.compressor import Compressor, CompressorConfig, code_from_storage, code_to_storage
from distrec.storage import StoredDirectory, join
from distrec.storage.embeddings import sorted_rows

__all__ = [
    "CODES",
    "SCHEMA_VERSION",
    "ENCODER",
    "DECODER",
    "CodeTable",
    "codes_part",
    "weights_bytes",
    "read_codes",
    "load_encoder",
    "load_decoder",
    "compress",
    "decompress",
]

CODES = "codes"
SCHEMA_VERSION = 1
ENCODER, DECODER = "encoder.safetensors", "decoder.safetensors"
BATCH = 65536  # rows per forward pass in compress/decompress


@dataclass
class CodeTable:
    index: np.ndarray  # int64 [N]
    codes: np.ndarray  # int8 or float16 [N, c]
    columns: dict[str, np.ndarray]  # per-row extras carried over from the source, e.g. "bias" [N]
    raw: np.ndarray | None
    meta: dict[str, Any]


def codes_part(index: np.ndarray, codes: np.ndarray, *, raw: np.ndarray | None = None, **columns: np.ndarray) -> pa.Table:
    """One shard: ``codes`` [N, c] becomes a fixed-size list column of its dtype."""
    data: dict[str, pa.Array] = {"index": pa.array(index.astype(np.int64))}
    if raw is not None:
        data["raw"] = pa.array(raw)
    data["code"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(codes).ravel()), codes.shape[1])
    for name, values in columns.items():
        data[name] = pa.array(values)
    return pa.table(data)


def weights_bytes(model: Compressor, keys: list[str]) -> bytes:
    """Safetensors of the named state-dict entries (contiguous copies: the file owns its tensors)."""
    state = model.state_dict()
    return safetensors.torch.save({k: state[k].detach().cpu().contiguous().clone() for k in keys})


def read_codes(uri: str) -> CodeTable:
    """A whole compressed table, rows in index order (every shard checked against its sha256)."""
    store = StoredDirectory(uri, kind=CODES, schema_version=SCHEMA_VERSION)
    parts = [store.read_table(p) for p in store.manifest.paths("part-")]
    if not parts:
        raise DataError(f"{uri}: the compressed table has no parts")
    index, codes, columns, raw = sorted_rows(pa.concat_tables(parts), column="code", width=int(store.meta["code_size"]))
    return CodeTable(index=index, codes=codes, columns=columns, raw=raw, meta=store.meta)


def _load(uri: str, half: Literal["encoder", "decoder"]) -> Compressor:
    store = StoredDirectory(uri, kind=CODES, schema_version=SCHEMA_VERSION)
    meta = store.meta
    cfg = from_dict(CompressorConfig, meta["compressor"], source=join(uri, "_manifest.json"))
    model = Compressor(cfg, dim=int(meta["dim"]), code_size=int(meta["code_size"]))
    name = ENCODER if half == "encoder" else DECODER
    try:
        state = safetensors.torch.load(store.read_bytes(name))
    except (ValueError, RuntimeError) as e:  # safetensors' own header errors
        raise DataError(f"{join(uri, name)}: not a readable safetensors file ({e})") from None
    expected = model.encoder_keys() if half == "encoder" else model.decoder_keys()
    if sorted(state) != sorted(expected):
        raise DataError(f"{join(uri, name)}: holds {len(state)} tensors, not the {len(expected)} of this compressor's {half}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_encoder(uri: str) -> Compressor:
    """The trained compressor with its encoder half loaded (for ``compress``)."""
    return _load(uri, "encoder")


def load_decoder(uri: str) -> Compressor:
    """The trained compressor with its decoder half loaded (for ``decompress``)."""
    return _load(uri, "decoder")


def compress(embeddings: np.ndarray, encoder: Compressor) -> np.ndarray:
    """Embeddings [N, d] (float32) → codes [N, c] (int8 or float16, as the compressor was trained)."""
    if embeddings.ndim != 2 or embeddings.shape[1] != encoder.dim:
        raise ValueError(f"expected embeddings of shape [N, {encoder.dim}], got {list(embeddings.shape)}")
    encoder.eval()
    device = encoder.mean.device  # the compressor's device: batches go there, codes come back
    out = []
    with torch.no_grad():
        for start in range(0, len(embeddings), BATCH):
            x = torch.from_numpy(np.ascontiguousarray(embeddings[start : start + BATCH], dtype=np.float32)).to(device)
            code, _ = encoder.encode(x)
            out.append(code_to_storage(code, encoder.cfg.code_dtype))
    empty = np.zeros((0, encoder.code_size), np.int8 if encoder.cfg.code_dtype == "int8" else np.float16)
    return np.concatenate(out) if out else empty


def decompress(codes: np.ndarray, decoder: Compressor) -> np.ndarray:
    """Codes [N, c] → embeddings [N, d] (float32)."""
    if codes.ndim != 2 or codes.shape[1] != decoder.code_size or codes.dtype != np.dtype(decoder.cfg.code_dtype):
        raise ValueError(
            f"expected {decoder.cfg.code_dtype} codes of shape [N, {decoder.code_size}], got {codes.dtype} {list(codes.shape)}"
        )
    decoder.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(codes), BATCH):
            out.append(decoder.decode(code_from_storage(codes[start : start + BATCH]).to(decoder.mean.device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, decoder.dim), np.float32)
