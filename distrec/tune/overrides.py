"""Which of a sweep's command-line ``key=value`` overrides are the sweep's and which its base job's.

``jobs/tune.py --config configs/tune/ease-ml-1m.yaml data.path=X`` means the dataset of the
job being swept: ``data`` is no key of the sweep, but ``data.path`` is one of its base config.
Such an override joins the sweep's ``overrides`` (applied to the base for every trial). A key
the sweep has (``num_samples``, ``output_dir``, ``scheduler.name``, ...) stays the sweep's; a
key neither has is refused, with the nearest keys of both as suggestions.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distrec.config import ConfigError, from_dict, load_config, merge, to_dict
from distrec.jobs import get_job
from distrec.tune.config import SweepConfig

__all__ = ["load_sweep", "config_keys"]


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> tuple[SweepConfig, list[str]]:
    """The sweep at ``path`` with ``overrides`` applied; returns it and the overrides that went
    to its base config (now at the end of ``cfg.overrides``). Raises ConfigError for a key that
    is neither the sweep's nor its base config's."""
    sweep_keys = {f.name for f in dataclasses.fields(SweepConfig)}
    own = [o for o in overrides if o.partition("=")[0].split(".")[0] in sweep_keys or "=" not in o]
    others = [o for o in overrides if o not in own]
    cfg = load_config(SweepConfig, path, own)
    if not others:
        return cfg, []
    try:
        base = get_job(cfg.job).load(cfg.base, cfg.overrides)
    except ConfigError as e:
        raise ConfigError(f"base {e}") from None
    keys, mappings = config_keys(base)
    unknown = [o.partition("=")[0] for o in others if not _takes(o.partition("=")[0], keys, mappings)]
    if unknown:
        known = sorted(keys | config_keys(cfg)[0])
        raise ConfigError(
            f"{path}: {', '.join(_suggest(k, known) for k in unknown)}: a key of neither the sweep (SweepConfig takes "
            f"{sorted(sweep_keys)}) nor its base config {cfg.base} ({type(base).__name__})"
        )
    raw = merge(to_dict(cfg), {"overrides": [*cfg.overrides, *others]})
    return from_dict(SweepConfig, raw, source=f"{path} (with overrides {' '.join(overrides)})"), others


def config_keys(cfg: Any) -> tuple[set[str], set[str]]:
    """Every dotted key the config instance ``cfg`` takes, and those of them that are mappings
    (``sharding.types``: any entry below them is a key too). A section set to null has its
    class's keys (an override below it turns the section on)."""
    keys: set[str] = set()
    mappings: set[str] = set()

    def walk(node: Any, cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            key = prefix + f.name
            keys.add(key)
            value = getattr(node, f.name) if node is not None else None
            section = type(value) if dataclasses.is_dataclass(value) else _section(hints[f.name])
            if isinstance(value, dict) or typing.get_origin(hints[f.name]) is dict:
                mappings.add(key)
            elif section is not None:
                walk(value if dataclasses.is_dataclass(value) else None, section, key + ".")

    walk(cfg, type(cfg), "")
    return keys, mappings


def _section(hint: Any) -> type | None:
    """The dataclass a field's type hint names (alone, or as ``X | None``), if exactly one."""
    if dataclasses.is_dataclass(hint):
        return hint
    found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
    return found[0] if len(found) == 1 else None


def _takes(key: str, keys: set[str], mappings: set[str]) -> bool:
    parts = key.split(".")
    return key in keys or any(".".join(parts[:i]) in mappings for i in range(1, len(parts)))


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"'{key}'" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else "")
