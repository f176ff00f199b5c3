"""Every ready sweep in configs/tune/ resolves: its base config loads with each searched value."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.config import ConfigError, load_config
from distrec.tune.config import SweepConfig
from distrec.tune.run import base_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_ready_sweep_resolves(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # base paths are relative to the repository, as the README runs them
    cfg = load_config(SweepConfig, path)
    base = base_config(cfg)
    assert base.output_dir == cfg.output_dir


def test_searched_value_the_job_rejects_names_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("base: configs/mf/demo.yaml\nsearch:\n  model.dimm: {choice: [8, 16]}\nmetric: val_rmse\noutput_dir: x\n")
    with pytest.raises(ConfigError, match="model.dimm"):
        base_config(load_config(SweepConfig, sweep))


def test_searched_key_cannot_also_be_fixed(tmp_path):
    sweep = tmp_path / "clash.yaml"
    sweep.write_text(
        "base: configs/mf/demo.yaml\noverrides: [model.dim=8]\nsearch:\n  model.dim: {choice: [8, 16]}\n"
        "metric: val_rmse\noutput_dir: x\n"
    )
    with pytest.raises(ConfigError, match="model.dim"):
        load_config(SweepConfig, sweep)
