"""Models by name: ``model.name`` in a config picks one of the models listed here, so configs
never import code.

Each model module declares its models once, in ``SPECS`` (distrec/models/spec.py: name, config
class, builder, task, needs, loop), as each dataset parser module does for datasets. Adding a
model is its module plus its name in one of the two lists below:

- ``TRAINED``: trained by a loop of distrec/train (TorchRec tables, the dense matrix, or ALS sweeps);
- ``CLOSED_FORMS``: fitted by one solve per λ (distrec/fit, jobs/compare.py).

A group's modules are imported when the group is first asked for, so a closed-form fit never
imports TorchRec. The config unions (``config_union``) are what the job configs' ``model``
fields accept: ``train.config.ModelConfig``, ``fit.config.ClosedFormConfig`` and compare's.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import nn

from distrec.data.user_items import UserItems
from distrec.models.spec import ModelContext, ModelSpec

__all__ = ["TRAINED", "CLOSED_FORMS", "specs", "config_union", "model_spec", "build_model", "build_closed_form"]

# distrec/models/<module>.py, each with SPECS; one name per model module
TRAINED = ("mf", "glocal_k", "ncf", "mf_bpr", "neumf", "lightgcn", "two_tower", "als")
CLOSED_FORMS = ("closed_form",)


@functools.cache
def specs(group: Sequence[str]) -> tuple[ModelSpec, ...]:
    """The specs of a group's modules (``TRAINED`` or ``CLOSED_FORMS``), in list order."""
    return tuple(spec for module in group for spec in importlib.import_module(f"distrec.models.{module}").SPECS)


def config_union(group: Sequence[str]) -> Any:
    """The group's config classes as one union, which the config loader resolves by ``name``."""
    return Union[tuple(spec.config for spec in specs(group))]  # noqa: UP007 (built at run time)


def model_spec(cfg: Any) -> ModelSpec:
    """The spec of the model a config describes."""
    for group in (CLOSED_FORMS, TRAINED):  # a closed form is found without importing the trained models
        for spec in specs(group):
            if type(cfg) is spec.config:
                return spec
    raise ValueError(f"no model registered for {type(cfg).__name__} (name {getattr(cfg, 'name', None)!r})")


def build_model(cfg: Any, ctx: ModelContext, device: torch.device) -> nn.Module:
    """A trained model, unsharded (on ``device``: meta for the planner of a TorchRec model)."""
    spec = model_spec(cfg)
    if spec.build is None:  # its loop makes its own state (ALS)
        raise ValueError(f"no builder for model {cfg.name!r}")
    return spec.build(cfg, ctx, device)


def build_closed_form(cfg: Any, train: UserItems, *, device: torch.device = torch.device("cpu")) -> Any:
    """A closed form built (Gram matrix, kernel, counts) from the training interactions on
    ``device`` (the job's resolved ``model.device``); ``solve`` per λ."""
    return model_spec(cfg).build(cfg, train, device=device)
