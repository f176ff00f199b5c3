"""distrec's native CPU kernels: C++ built once per machine by ``make setup``, loaded at run time.

    ials_cg_cpu.cpp   implicit ALS's per-row conjugate-gradient solve (models/als.py)
    gumbel_cpu.cpp    Distill-CF's multi-Gumbel forward and backward (distill/gumbel.py)

    make setup                       # builds them (python -m distrec.kernels; a no-op when built)
    python -m distrec.kernels -v     # the same, by hand, showing the compiler's command lines

Why C++. iALS's half-sweep is, per row, a few passes over that row's ratings, each a dot product and
an axpy against the fixed side's rows. As batched torch ops that needs a padded copy of every row's
features ([rows, longest row, k], hundreds of MB on ML-1M) streamed from memory ten times a
half-sweep; a loop over the row reads the fixed side's table itself, which stays in cache (profile
and figures: README, ALS). The Gumbel sampler wants each draw's softmax over a row computed in a
cache-resident buffer and added straight into the row's total: ``torch.compile`` of the same
expression writes the [draws, rows, items] chunk of noise to memory and reads it back in three
reductions. numba would add a JIT (seconds per worker start) and a second thread pool. The C++ is
compiled by ``torch.utils.cpp_extension`` with the machine's g++ (``-O3 -march=native
-fno-math-errno -fopenmp``) against torch's headers, so ``at::parallel_for`` uses torch's own OpenMP
pool and thread count.

``load()`` never compiles: a process whose build is missing (a fresh checkout, a CI image that
skipped it, a changed source) gets ``False`` and the caller keeps its torch version, with one log
line saying how to build. A build lives in ``distrec/kernels/build/<name>/``, where the name
carries a digest of the sources, torch's version, the flags and the CPU's model and feature
flags, so a stale build, or one made for another CPU (a checkout shared between machines), is
never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

__all__ = ["load", "build", "library_path", "SOURCES"]

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name) for name in ("ials_cg_cpu.cpp", "gumbel_cpu.cpp")]
BUILD_ROOT = Path(__file__).with_name("build")
CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"]
LDFLAGS = ["-fopenmp"]

_loaded: bool | None = None


def _cpu() -> str:
    """The CPU that ``-march=native`` compiles for: its model name and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = {line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))}
        return "".join(sorted(lines))
    except OSError:
        return platform.processor()


def library_path() -> Path:
    """Where the build of this source, for this torch and CPU, is (or would be)."""
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    digest.update(f"{version('torch')}|{sys.version_info[:2]}|{CFLAGS}|{LDFLAGS}|{platform.machine()}|{_cpu()}".encode())
    name = f"distrec_kernels_{digest.hexdigest()[:16]}"
    return BUILD_ROOT / name / f"{name}.so"


def load() -> bool:
    """Load the built kernels into ``torch.ops.distrec`` (once per process); False, with a log
    line, when there is no build for this source, torch and CPU."""
    global _loaded
    if _loaded is None:
        import torch

        path = library_path()
        if not path.exists():
            log.warning("distrec's CPU kernels are not built (%s missing; run `make setup`): using the torch versions", path)
            _loaded = False
        else:
            torch.ops.load_library(str(path))
            _loaded = True
    return _loaded


def build(*, verbose: bool = False) -> Path:
    """Compile the kernels for this machine (a no-op when this build exists) and delete builds of
    other sources; returns the library's path."""
    path = library_path()
    if not path.exists():
        from torch.utils import cpp_extension

        path.parent.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=path.stem,
            sources=[str(source) for source in SOURCES],
            extra_cflags=CFLAGS,
            extra_ldflags=LDFLAGS,
            build_directory=str(path.parent),
            is_python_module=False,
            verbose=verbose,
        )
    for old in BUILD_ROOT.iterdir():
        if old.is_dir() and old.name != path.parent.name:
            shutil.rmtree(old, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(f"distrec kernels: {build(verbose='-v' in args)}")
