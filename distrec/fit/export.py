"""The fitted closed form as serving reads it: ``<output_dir>/weights/`` (manifest kind
``closed_form``) holding ``weights.safetensors`` (EASE: ``B``; ∞-AE: its support and α; see
each model's ``export``) and, in the manifest, the model, λ, dataset and split.

safetensors holds tensors and nothing else, so reading it runs no code (no pickle). PopRec
exports nothing: its ranking is the same for every user.
"""

from __future__ import annotations

import logging
from typing import Any

from safetensors.torch import save

from distrec.models.closed_form import ClosedForm
from distrec.storage import DirectoryWriter, join

__all__ = ["WEIGHTS", "WEIGHTS_FILE", "SCHEMA_VERSION", "export_weights"]

WEIGHTS = "closed_form"  # the manifest's kind
WEIGHTS_FILE = "weights.safetensors"
SCHEMA_VERSION = 1
log = logging.getLogger(__name__)


def export_weights(model: ClosedForm, fitted: Any, *, output_dir: str, meta: dict[str, Any]) -> str | None:
    """Write ``model``'s fitted weights to ``<output_dir>/weights``; returns its URI (None for a
    model with nothing to serve)."""
    if not hasattr(model, "export"):
        return None
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.export(fitted).items()}  # any device
    uri = join(output_dir, "weights")
    with DirectoryWriter(uri, kind=WEIGHTS, schema_version=SCHEMA_VERSION) as w:
        w.write_bytes(WEIGHTS_FILE, save(tensors), rows=0)
        shapes = {name: list(t.shape) for name, t in tensors.items()}
        w.commit({**meta, **model.export_meta(), "tensors": shapes})
    log.info("exported %s weights to %s (%s)", meta.get("model"), uri, shapes)
    return uri
