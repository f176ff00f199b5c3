"""Choose λ on validation, then score test with it: the one protocol every closed form follows.

For each λ of the model's grid: solve, score the validation users (context and mask: train),
and keep the λ with the best ``val_<select>``; then score the test users with it (context and
mask: train + validation), as the ∞-AE paper's code does. A λ whose system cannot be factorised
in the configured precision (λ = 0 with a singular kernel) is skipped and recorded as such.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from distrec.errors import DataError, UserError
from distrec.eval.holdout import Holdout, Part
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.models.closed_form import ClosedForm, NotPositiveDefinite
from distrec.resources import Stopwatch

__all__ = ["search_and_test", "search_lambda"]

log = logging.getLogger(__name__)


def _evaluate(
    model: ClosedForm, fitted: Any, holdout: Holdout, part: Part, cfg: RankingConfig, propensity: np.ndarray
) -> dict[str, float]:
    return evaluate_ranking(
        model.scorer(fitted, holdout.context(part)),
        target=holdout.target(part),
        seen=holdout.seen(part),
        cfg=cfg,
        prefix=part,
        propensity=propensity,
        device=model.device,  # the metrics are computed where the scores are
    )


def search_lambda(
    model: ClosedForm, holdout: Holdout, *, eval_cfg: RankingConfig, select: str
) -> tuple[dict[str, Any], list[dict[str, Any]], tuple[float | None, Any]]:
    """The λ of the model's grid with the best ``val_<select>`` (its ``lambda`` and ``val_*``
    metrics), one record per λ tried, and the last solve ``(λ, weights)``: only one λ's weights
    are ever held, so the caller re-solves the best λ if it was not the last."""
    propensity = holdout.propensity()
    key = f"val_{eval_cfg.label}{select}"
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for lam in model.lambdas or [None]:
        clock = Stopwatch()
        fitted, fitted_lam = None, None  # the previous λ's weights go before the next solve (see the memory plan)
        try:
            fitted, fitted_lam = model.solve(lam), lam
        except NotPositiveDefinite as e:
            log.warning("λ=%s skipped: %s", lam, e)
            trials.append({"lambda": lam, "skipped": str(e)})
            continue
        val = _evaluate(model, fitted, holdout, "val", eval_cfg, propensity)
        if key not in val:
            raise DataError(f"the split has no validation positives to choose λ by ({key} is undefined)")
        trials.append({"lambda": lam, "seconds": clock.seconds(), **val})
        log.info("λ=%s: %s = %.4f (%.1f s)", lam, key, val[key], clock.seconds())
        if best is None or val[key] > best[key]:
            best = {"lambda": lam, **val}
    if best is None:
        raise UserError(f"no λ in {model.lambdas} gave a positive-definite system; add larger values to model.lambdas")
    return best, trials, (fitted_lam, fitted)


def search_and_test(
    model: ClosedForm,
    holdout: Holdout,
    *,
    eval_cfg: RankingConfig,
    select: str,
    keep: Callable[[float | None, Any], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Returns the metrics (``lambda``: the chosen λ, None for a model without one; its
    ``val_*`` and the ``test_*`` metrics; ``search_s``, ``test_s``) and one record per λ tried.
    ``keep(λ, weights)`` is given the chosen λ's weights after the test (to export them) before
    they are dropped."""
    search = Stopwatch()
    best, trials, (fitted_lam, fitted) = search_lambda(model, holdout, eval_cfg=eval_cfg, select=select)
    search_s = search.seconds()
    clock = Stopwatch()
    if fitted_lam != best["lambda"]:
        fitted = None
        fitted = model.solve(best["lambda"])
    log.info("chosen λ=%s (best val_%s%s); scoring test", best["lambda"], eval_cfg.label, select)
    test = _evaluate(model, fitted, holdout, "test", eval_cfg, holdout.propensity())
    if keep is not None:
        keep(best["lambda"], fitted)
    return {**best, **test, "search_s": search_s, "test_s": clock.seconds()}, trials
