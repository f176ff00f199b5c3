from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from distrec.config import ConfigError, load_config, parse_overrides, to_yaml


@dataclass
class Data:
    path: str
    split: str = "default"


@dataclass
class MF:
    name: Literal["mf"] = "mf"
    dim: int = 32


@dataclass
class NCF:
    name: Literal["ncf"] = "ncf"
    layers: list[int] = field(default_factory=lambda: [64, 32])


@dataclass
class Job:
    data: Data
    model: MF | NCF = field(default_factory=MF)
    lr: float = 0.1
    epochs: int = 3
    tags: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def write(tmp_path, text: str):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides(tmp_path):
    p = write(tmp_path, "data: {path: /x}\nmodel: {name: ncf, layers: [8, 4]}\nlr: 1e-3\n")
    cfg = load_config(Job, p, ["epochs=7", "data.split=u1", "model.layers=[2]"])
    assert cfg.data == Data(path="/x", split="u1")
    assert cfg.model == NCF(layers=[2])
    assert cfg.lr == pytest.approx(1e-3) and cfg.epochs == 7


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(Job, write(tmp_path, "data: {path: s3://b/x}\nnote: hi\n"))
    again = load_config(Job, write(tmp_path, to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("data: {path: /x}\nlrr: 1\n", [], "unknown key 'lrr' (did you mean 'lr'?)"),
        ("data: {path: /x, splt: a}\n", [], "unknown key 'data.splt'"),
        ("data: {path: /x}\nepochs: many\n", [], "key 'epochs': expected an integer"),
        ("data: {path: /x}\n", ["epochs=2.5"], "key 'epochs': expected an integer"),
        ("lr: 1\n", [], "missing key 'data.path'"),
        ("data: {path: /x}\nmodel: {name: mff}\n", [], "unknown name 'mff' (did you mean 'mf'?)"),
        ("data: {path: /x}\nmodel: {name: mf, layers: [1]}\n", [], "unknown key 'model.layers'"),
        ("data: [1, 2]\n", [], "key 'data': expected a mapping"),
        ("- 1\n", [], "expected a mapping of keys at the top level"),
        ("data: {path: /x}\n", ["novalue"], "expected dotted.key=value"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, overrides, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(Job, p, overrides)
    assert message in str(e.value)
    assert str(p) in str(e.value) or "override" in str(e.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Job, tmp_path / "nope.yaml")


def test_parse_overrides_nests_and_types():
    assert parse_overrides(["a.b=1", "a.c=x", "d=true", "e=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": True, "e": [1, 2]}
