"""A sweep's command-line overrides: keys of the base job's config go to the base, with one line
saying so; keys of neither are refused with suggestions (distrec/tune/overrides.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.config import ConfigError
from distrec.tune.overrides import load_sweep
from jobs.tune import main as tune

ROOT = Path(__file__).resolve().parents[2]
EASE = "configs/tune/ease-ml-1m.yaml"  # base: configs/ease/ml-1m.yaml (a FitConfig)


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # sweeps name their base relative to the repository, as the README runs them


def test_base_key_is_forwarded_and_sweep_key_stays(tmp_path):
    cfg, forwarded = load_sweep(EASE, [f"data.path={tmp_path}/ml-1m", "num_samples=2"])
    assert forwarded == [f"data.path={tmp_path}/ml-1m"]
    assert cfg.overrides == [f"data.path={tmp_path}/ml-1m"] and cfg.num_samples == 2


@pytest.mark.parametrize(
    "sweep, override",
    [("configs/tune/mf-ml-1m.yaml", "sharding.types.user=column_wise"),  # an entry of a mapping section
     ("configs/tune/distill-ml-1m.yaml", "ray.num_workers=2")],  # a key below a section the base sets to null
)  # fmt: skip
def test_other_kinds_of_base_keys_are_forwarded(sweep, override):
    cfg, forwarded = load_sweep(sweep, [override])
    assert forwarded == [override] and cfg.overrides[-1] == override


def test_forwarded_override_reaches_the_trials_base(tmp_path, capsys):
    """Through the job: the line saying so, then the base config opened at the forwarded path
    (no such dataset here: exit 2 naming it, nothing written)."""
    out = tmp_path / "sweep"
    code = tune(["--config", EASE, f"data.path={tmp_path}/nowhere", f"output_dir={out}"])
    captured = capsys.readouterr()
    assert code == 2
    said = [line for line in captured.out.splitlines() if "base config configs/ease/ml-1m.yaml" in line]
    assert len(said) == 1 and f"data.path={tmp_path}/nowhere" in said[0]
    assert f"{tmp_path}/nowhere" in captured.err and "no such directory" in captured.err
    assert not out.exists()


@pytest.mark.parametrize(
    "override, suggestion",
    [("dta.path=/x", "'data.path'"), ("num_sample=3", "'num_samples'"), ("model.lambda=[100]", "'model.lambdas'")],
)
def test_key_of_neither_is_refused_with_suggestions(override, suggestion, tmp_path, capsys):
    with pytest.raises(ConfigError, match="neither the sweep") as e:
        load_sweep(EASE, [override])
    assert suggestion in str(e.value) and override.partition("=")[0] in str(e.value)
    out = tmp_path / "sweep"
    assert tune(["--config", EASE, override, f"output_dir={out}"]) == 2
    assert suggestion in capsys.readouterr().err and not out.exists()


def test_searched_key_from_the_command_line_is_refused():
    with pytest.raises(ConfigError, match="model.lambdas"):
        load_sweep(EASE, ["model.lambdas=[100]"])
