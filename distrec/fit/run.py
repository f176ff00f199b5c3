"""The fit job's body: read the split, build the closed form, search λ, test, write the results.

Writes ``<output_dir>/metrics.json`` (flat: ``lambda``, ``val_*`` of the chosen λ, ``test_*``,
timings, ``peak_rss_mb``; metrics are fractions, ×100 is the papers' scale),
``lambdas.json`` (every λ tried with its validation metrics), ``config.yaml``, the run report
(``report.md``, ``report.html``, ``test_at_k.png``; its URI is ``report`` in the metrics) and
the chosen λ's weights for serving (``weights/``, distrec/fit/export.py; ``weights`` in the
metrics; ``export_weights: false`` skips them).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from distrec.config import to_yaml
from distrec.device import resolve_device
from distrec.eval.holdout import Holdout
from distrec.fit.config import FitConfig
from distrec.fit.export import export_weights
from distrec.fit.report import write_fit_report
from distrec.fit.search import search_and_test
from distrec.models.closed_form import check_memory
from distrec.models.registry import build_closed_form
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.storage import join, write_text

__all__ = ["fit_closed_form"]

log = logging.getLogger(__name__)


def fit_closed_form(cfg: FitConfig) -> dict[str, Any]:
    clock = Stopwatch()
    dataset = cfg.data.open()  # its user and item counts checked against the shards
    split = dataset.resolve_split(cfg.data.split)
    device = resolve_device(cfg.model.device)
    check_memory(cfg.model, num_items=dataset.num_items, device=device)  # before anything is read or allocated
    holdout = Holdout.read(dataset, split)
    log.info(
        "%s (split %s): %d users, %d items; train %d, val %d, test %d pairs",
        cfg.data.path,
        split,
        dataset.num_users,
        dataset.num_items,
        holdout.train.nnz,
        holdout.val.nnz,
        holdout.test.nnz,
    )
    build = Stopwatch()
    model = build_closed_form(cfg.model, holdout.train, device=device)
    build_s = build.seconds()
    log.info("%s built on %s in %.1f s: %s", cfg.model.name, device, build_s, model.describe())
    exported: dict[str, str | None] = {}

    def keep(lam: float | None, fitted: Any) -> None:
        if cfg.export_weights:
            meta = {"model": cfg.model.name, "dataset": cfg.data.path, "split": split, "lambda": lam}
            exported["weights"] = export_weights(model, fitted, output_dir=cfg.output_dir, meta=meta)

    metrics, trials = search_and_test(model, holdout, eval_cfg=cfg.eval, select=cfg.select, keep=keep)
    metrics = {
        "model": cfg.model.name,
        "dataset": cfg.data.path,
        "split": split,
        "select": f"val_{cfg.eval.label}{cfg.select}",
        **model.describe(),
        "device": str(device),
        **metrics,
        "build_s": build_s,
        "wall_s": clock.seconds(),
        "peak_rss_mb": peak_rss_mb(),
        **({"weights": exported["weights"]} if exported.get("weights") else {}),
    }
    write_text(join(cfg.output_dir, "lambdas.json"), json.dumps(trials, indent=1))
    write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))
    metrics["report"] = write_fit_report(cfg, dataset, metrics, trials)
    write_text(join(cfg.output_dir, "metrics.json"), json.dumps(metrics, indent=1))
    return metrics
