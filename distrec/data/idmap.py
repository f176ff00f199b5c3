"""Raw id → dense index, assigned incrementally in order of first appearance.

Streaming parsers see ids chunk by chunk, so indices are given as ids first appear; the result
is deterministic for a given file. Non-negative integer ids (every MovieLens and Netflix id)
use a growable lookup array, so encoding a chunk is a vectorised gather; other ids (strings,
huge integers) go through a dictionary over the chunk's unique values.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["IdMap"]

_LUT_LIMIT = 1 << 27  # raw integer ids below this are served by the lookup array (512 MiB of int32)


class IdMap:
    def __init__(self) -> None:
        self._lut = np.full(0, -1, dtype=np.int32)
        self._dict: dict[object, int] = {}
        self._raw: list[np.ndarray] = []
        self._size = 0
        self._kind: str | None = None  # "int" or "object"

    def __len__(self) -> int:
        return self._size

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices (int64 [N]) for raw ids [N], adding unseen ids in order of first appearance."""
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        kind = "int" if raw.dtype.kind in "iu" else "object"
        if self._kind is None:
            self._kind = kind
        if kind != self._kind:
            raise ValueError(f"ids changed type mid-file ({self._kind} then {kind})")
        if kind == "int" and self._dict == {} and raw.min() >= 0 and (top := int(raw.max()) + 1) <= _LUT_LIMIT:
            return self._encode_lut(raw, top)
        if kind == "int" and len(self._lut) and not self._dict:
            self._move_lut_to_dict()
        return self._encode_dict(raw)

    def _encode_lut(self, raw: np.ndarray, top: int) -> np.ndarray:
        if top > len(self._lut):
            grown = np.full(max(top, 2 * len(self._lut)), -1, dtype=np.int32)
            grown[: len(self._lut)] = self._lut
            self._lut = grown
        dense = self._lut[raw]  # int32: half the bytes of random reads into the table
        new = dense < 0
        if new.any():
            fresh = raw[new]
            uniq = pc.unique(pa.array(fresh)).to_numpy()  # hash-based, in order of first appearance
            self._lut[uniq] = np.arange(self._size, self._size + len(uniq), dtype=np.int32)
            self._size += len(uniq)
            self._raw.append(uniq.astype(np.int64, copy=False))
            dense[new] = self._lut[fresh]
        return dense.astype(np.int64)

    def _move_lut_to_dict(self) -> None:
        known = np.flatnonzero(self._lut >= 0)
        self._dict = {int(r): int(self._lut[r]) for r in known}
        self._lut = np.full(0, -1, dtype=np.int32)

    def _encode_dict(self, raw: np.ndarray) -> np.ndarray:
        uniq, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
        codes = np.empty(len(uniq), dtype=np.int64)
        fresh = []
        for pos in np.argsort(first):  # new ids numbered in order of first appearance
            key = uniq[pos].item() if hasattr(uniq[pos], "item") else uniq[pos]
            code = self._dict.get(key)
            if code is None:
                code = self._dict[key] = self._size
                self._size += 1
                fresh.append(key)
            codes[pos] = code
        if fresh:
            self._raw.append(np.asarray(fresh, dtype=raw.dtype if self._kind == "int" else object))
        return codes[inverse.reshape(-1)]

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        """Dense indices for raw ids without adding any; -1 where the id was never seen."""
        if self._dict:
            return np.array([self._dict.get(r.item() if hasattr(r, "item") else r, -1) for r in raw], dtype=np.int64)
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iu" or len(self._lut) == 0:
            return np.full(len(raw), -1, dtype=np.int64)
        inside = (raw >= 0) & (raw < len(self._lut))
        out = np.full(len(raw), -1, dtype=np.int64)
        out[inside] = self._lut[raw[inside]]
        return out

    def raw_ids(self) -> np.ndarray:
        """Raw ids in dense-index order ([len(self)])."""
        if not self._raw:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self._raw)

    def to_table(self) -> pa.Table:
        raw = self.raw_ids()
        raw_array = pa.array(raw if self._kind == "int" else raw.astype(str))
        return pa.table({"index": pa.array(np.arange(len(raw), dtype=np.int64)), "raw": raw_array})
