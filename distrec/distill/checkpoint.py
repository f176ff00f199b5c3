"""Distill-CF's checkpoint: everything a restarted run needs to continue where it stopped.

    state.pt       logits [n, I], the best synthetic set so far [n, I], Adam's state (moments,
                   step count) — torch.save, read back with torch.load(weights_only=True)
    progress.json  the last finished step, the best step and its validation metrics, the λ
                   later steps regress with, the learning curve so far, whether patience ran out

No RNG state is saved because none is carried between steps: step t's Gumbel noise is seeded by
(seed, t) and its real-user batch by (seed, t, rank), so the steps after a resume draw exactly
what they would have drawn without the interruption. Rank 0 writes the files (every worker
holds the same logits); every worker reports, as Ray Train gathers a checkpoint from all of them.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

from distrec.errors import DataError
from distrec.train.checkpoint import PROGRESS, load_tensors
from distrec.train.session import Session

__all__ = ["save_distill_state", "load_distill_state"]

STATE = "state.pt"


def save_distill_state(
    session: Session, *, rank: int, logits: torch.Tensor, best_x: torch.Tensor, optimizer: torch.optim.Optimizer, progress: dict[str, Any]
) -> None:
    """Checkpoint after step ``progress["step"]`` (every worker calls this)."""
    with tempfile.TemporaryDirectory(prefix="distrec-ckpt-") as tmp:
        if rank == 0:
            state = {"logits": logits.detach(), "best_x": best_x, "optim": optimizer.state_dict()}
            torch.save(state, os.path.join(tmp, STATE))
            with open(os.path.join(tmp, PROGRESS), "w") as f:
                json.dump(progress, f)
        last = progress["curve"][-1]
        session.report({"epoch": progress["step"], **{k: v for k, v in last.items() if k != "step"}}, tmp)


def load_distill_state(directory: str, *, logits: torch.Tensor, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], torch.Tensor]:
    """Restore ``logits`` and ``optimizer`` in place; returns the progress and the best set [n, I]."""
    for name in (STATE, PROGRESS):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(f"{directory}: checkpoint is missing {name}")
    state = load_tensors(os.path.join(directory, STATE))
    if state["logits"].shape != logits.shape:
        raise DataError(f"{directory}: checkpoint holds {tuple(state['logits'].shape)} logits, this run {tuple(logits.shape)}; "
                        "a different budget or dataset: point output_dir elsewhere or delete its checkpoints/")
    with torch.no_grad():
        logits.copy_(state["logits"])
    optimizer.load_state_dict(state["optim"])  # moves the moments to the logits' device
    with open(os.path.join(directory, PROGRESS)) as f:
        return json.load(f), state["best_x"].to(logits.device)
