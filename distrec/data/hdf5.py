"""Opening an HDF5 file (∞-AE's ``total_data.hdf5``, a MATLAB v7.3 ``.mat``) from a ``Source``.

The file is read into memory first: archive members and object-store files are not seekable,
and these files are small (tens of MB). A file that is not HDF5 becomes a ``DataError``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import h5py

from distrec.data.source import Source
from distrec.errors import DataError

__all__ = ["open_hdf5"]


@contextmanager
def open_hdf5(source: Source, name: str, what: str = "HDF5") -> Iterator[h5py.File]:
    """``name`` opened read-only; ``what`` names the expected format in error messages. HDF5's
    errors while opening or reading (truncated file, corrupt chunk) become ``DataError``."""
    with source.open(name) as f:
        blob = io.BytesIO(f.read())
    try:
        with h5py.File(blob, "r") as h5:
            yield h5
    except OSError as e:
        raise DataError(f"{source.label(name)}: not a readable {what} file ({e})") from None
