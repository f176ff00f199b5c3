"""The baselines the compressor is measured against, at the same bytes per row.

- ``PCACodec``: truncated PCA (the SVD of the centred training rows) to the compressor's code
  size, codes stored in the compressor's code dtype (int8 codes are scaled per component by the
  largest training magnitude, then clipped), so both spend exactly the same bytes per row.
- ``ScalarCodec``: per-feature uniform scalar quantisation between the training minimum and
  maximum, ``32 / ratio`` bits a value (int8 at 4×, int4 at 8×), bit-packed.

Each codec is fitted on the rows the compressor trained on, then encodes any rows (new
entities included). ``side_bytes`` is what a reader needs besides the codes (basis, ranges).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distrec.models.compressor import CODE_BYTES, CodeDtype, code_from_storage, code_to_storage

__all__ = ["PCACodec", "ScalarCodec"]


class PCACodec:
    name = "pca"

    def __init__(self, train: np.ndarray, *, code_size: int, dtype: CodeDtype) -> None:
        """``train`` [N, d] float32."""
        x = train.astype(np.float64)
        self.mean = x.mean(0)  # [d]
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[:code_size].T  # [d, c], columns by decreasing variance
        self.dtype = dtype
        self.range = np.maximum(np.abs((x - self.mean) @ self.basis).max(0), 1e-12)  # [c]
        self.bytes_per_row = code_size * CODE_BYTES[dtype]
        self.side_bytes = 4 * (self.basis.size + self.mean.size + self.range.size)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """[N, d] → int8 or float16 codes [N, c]."""
        code = (x.astype(np.float64) - self.mean) @ self.basis
        if self.dtype == "int8":
            return code_to_storage(torch.from_numpy(np.clip(code / self.range, -1, 1)).float(), "int8")
        return code.astype(np.float16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        code = code_from_storage(codes).double().numpy()
        if self.dtype == "int8":
            code = code * self.range
        return (self.mean + code @ self.basis.T).astype(np.float32)


class ScalarCodec:
    name = "scalar"

    def __init__(self, train: np.ndarray, *, bits: int) -> None:
        if not 1 <= bits <= 16:
            raise ValueError(f"scalar quantisation takes 1 to 16 bits a value, not {bits}")
        self.bits, self.dim = bits, train.shape[1]
        self.low, high = train.min(0).astype(np.float64), train.max(0).astype(np.float64)  # [d]
        self.step = np.maximum(high - self.low, 1e-12) / (2**bits - 1)
        self.bytes_per_row = math.ceil(self.dim * bits / 8)
        self.side_bytes = 4 * 2 * self.dim

    @classmethod
    def for_ratio(cls, train: np.ndarray, ratio: int) -> ScalarCodec | None:
        """The codec that stores float32 in ``1/ratio`` of its bytes, if a whole bit count does."""
        return cls(train, bits=32 // ratio) if 32 % ratio == 0 and ratio >= 2 else None

    def encode(self, x: np.ndarray) -> np.ndarray:
        """[N, d] → packed codes [N, ceil(d · bits / 8)] uint8."""
        q = np.rint((np.clip(x, self.low, self.low + self.step * (2**self.bits - 1)) - self.low) / self.step).astype(np.uint16)
        shifts = np.arange(self.bits - 1, -1, -1, dtype=np.uint16)
        bit_planes = ((q[..., None] >> shifts) & 1).astype(np.uint8)  # [N, d, bits], most significant first
        return np.packbits(bit_planes.reshape(len(x), -1), axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        bit_planes = np.unpackbits(codes, axis=1, count=self.dim * self.bits).reshape(len(codes), self.dim, self.bits)
        q = (bit_planes.astype(np.uint32) << np.arange(self.bits - 1, -1, -1, dtype=np.uint32)).sum(2)  # [N, d]
        return (self.low + q * self.step).astype(np.float32)
