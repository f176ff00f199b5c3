"""Quiet the libraries' start-up chatter in training processes (fbgemm prints a line per kernel
library it loads, the planner and DDP warn about defaults we set on purpose). Call it before
the first TorchRec import; distrec's own messages and real errors still show."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_library_logs"]


def quiet_library_logs() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(rec)?\.")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("torchrec", "torch.fx._symbolic_trace", "torch.distributed.checkpoint", "fbgemm_gpu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # Ray Train logs "Reporting training result N" per report and rank, from a logger named by file
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
