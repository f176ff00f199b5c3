"""Typed job configs: dataclasses loaded from YAML, with dotted ``key=value`` overrides.

Every job has one dataclass; its YAML mirrors it. Loading validates every key and type and
names the file and the dotted key on error, so a typo never silently falls back to a default:

    cfg = load_config(TrainConfig, "configs/mf/ml-100k.yaml", ["train.lr=0.05"])

A field typed as a union of dataclasses (``model: MFConfig | NeuMFConfig``) is resolved by the
``name`` key, whose type in each variant is a one-value ``Literal``; configs therefore pick a
model from a closed set and can never import arbitrary code.

Numbers are checked here, at load, not in a worker minutes later: a float is always finite (NaN
and ±inf never load), and a field declares the range it accepts on its type, which the loader
checks and names in the error (``key 'optim.sparse_lr': expected a number > 0, got -1``):

    sparse_lr: Positive[float] = 0.05
    l2: NonNegative[float] = 0.0
    dropout: Annotated[float, Bound(ge=0, lt=1)] = 0.0
    memory_budget_gb: Positive[float] | None = None
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")
N = TypeVar("N", int, float)

__all__ = [
    "ConfigError",
    "Bound",
    "Positive",
    "NonNegative",
    "Probability",
    "load_config",
    "from_dict",
    "to_dict",
    "to_yaml",
    "parse_overrides",
    "nest",
    "merge",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source and the dotted key."""


@dataclasses.dataclass(frozen=True)
class Bound:
    """The range a numeric field accepts, declared on its type: ``Annotated[float, Bound(gt=0)]``."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def admits(self, value: float) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def __str__(self) -> str:  # "> 0", ">= 0 and < 1"
        limits = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        return " and ".join(f"{op} {limit:g}" for op, limit in limits if limit is not None)


Positive = Annotated[N, Bound(gt=0)]  # Positive[int], Positive[float]
NonNegative = Annotated[N, Bound(ge=0)]
Probability = Annotated[float, Bound(ge=0, le=1)]


def load_config(
    cls: type[T], path: str | Path | None, overrides: Sequence[str] = (), *, flags: dict[str, Any] | None = None
) -> T:
    """Read ``path`` (YAML; a local path or any fsspec URI, e.g. a run's saved ``config.yaml`` in
    object storage; ``None`` means all defaults), then apply ``flags`` (values a job took as
    command-line options) and the dotted ``overrides``, and validate into ``cls``."""
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        from distrec.storage.failures import STORAGE_ERRORS  # fsspec and the storage layer: only to read a file
        from distrec.storage.uri import filesystem

        try:
            fs, where = filesystem(source)
            text = fs.cat_file(where).decode()
        except STORAGE_ERRORS as e:
            raise ConfigError(f"cannot read config file {source}: {getattr(e, 'strerror', None) or e}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    raw = merge(merge(raw, flags or {}), parse_overrides(overrides))
    if overrides:
        source = f"{source} (with overrides {' '.join(overrides)})"
    return from_dict(cls, raw, source=source)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}``; values are parsed as YAML scalars."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        try:
            values[key] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            values[key] = value
    return nest(values)


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": "x"}`` → ``{"a": {"b": 1}, "c": "x"}`` (dotted keys to sections)."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key!r}: {part!r} is set to a value and used as a section")
        node[leaf] = value
    return tree


def from_dict(cls: type[T], data: Any, *, source: str = "<dict>") -> T:
    """Validate a plain mapping into the dataclass ``cls``; raises ConfigError naming the key."""
    return _convert(cls, data, key="", source=source)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (the inverse of ``from_dict``)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``, section by section (neither is modified)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _where(key: str, source: str) -> str:
    return f"{source}: key '{key}'" if key else source


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, *, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key=key, source=source)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        number = _convert(base, value, key=key, source=source)
        for bound in (m for m in marks if isinstance(m, Bound)):
            if not bound.admits(number):
                what = "an integer" if base is int else "a number"
                raise ConfigError(f"{_where(key, source)}: expected {what} {bound}, got {value!r}")
        return number
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, key=key, source=source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{_where(key, source)}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(key, source)}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{_where(key, source)}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, key=f"{key}[{i}]", source=source) for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, key=f"{key}[{i}]", source=source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(key, source)}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(val_tp, v, key=f"{key}.{k}", source=source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(key, source)}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(key, source)}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{_where(key, source)}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{_where(key, source)}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{_where(key, source)}: expected a string, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{_where(key, source)}: expected null, got {value!r}")
    raise TypeError(f"config type {tp!r} at {key!r} is not supported by distrec.config")


def _convert_union(tp: Any, value: Any, *, key: str, source: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    variants = {_variant_name(a): a for a in options if dataclasses.is_dataclass(a)}
    if variants and None not in variants and len(variants) == len(options):  # a tagged union (by `name`)
        if not isinstance(value, dict) or "name" not in value:
            raise ConfigError(f"{_where(key, source)}: expected a mapping with 'name', one of {sorted(variants)}")
        if value["name"] not in variants:
            hint = difflib.get_close_matches(str(value["name"]), variants, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{_where(key + '.name', source)}: unknown name {value['name']!r}{extra}; choose one of {sorted(variants)}"
            )
        return _convert(variants[value["name"]], value, key=key, source=source)
    if len(options) == 1:
        return _convert(options[0], value, key=key, source=source)
    for option in options:
        try:
            return _convert(option, value, key=key, source=source)
        except ConfigError:
            continue
    raise ConfigError(f"{_where(key, source)}: {value!r} matches none of {[_type_name(o) for o in options]}")


def _variant_name(cls: type) -> str | None:
    hints = typing.get_type_hints(cls)
    name_tp = hints.get("name")
    if typing.get_origin(name_tp) is Literal and len(typing.get_args(name_tp)) == 1:
        return typing.get_args(name_tp)[0]
    return None


def _convert_dataclass(cls: type[T], value: Any, *, key: str, source: str) -> T:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(key, source)}: expected a mapping for {cls.__name__}, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls, include_extras=True)
    for k in value:
        if k not in fields:
            full = f"{key}.{k}" if key else str(k)
            hint = difflib.get_close_matches(str(k), fields, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown key '{full}'{extra}; {cls.__name__} takes {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        full = f"{key}.{name}" if key else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], key=full, source=source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _convert(hints[name], {}, key=full, source=source)
            else:
                raise ConfigError(f"{source}: missing key '{full}' ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{_where(key, source) if key else source}: {e}") from None
