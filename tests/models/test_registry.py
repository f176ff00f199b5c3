"""The model registry: every model declared once (its module's SPECS), found by its config, and a
closed-form job that never imports TorchRec."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from distrec.config import ConfigError, from_dict
from distrec.fit.config import FitConfig
from distrec.models.registry import CLOSED_FORMS, TRAINED, config_union, model_spec, specs
from distrec.train.config import TrainConfig
from tests.faults import REPO, python_env


def test_each_spec_is_named_as_its_config_and_found_by_it():
    every = specs(TRAINED) + specs(CLOSED_FORMS)
    assert len({s.name for s in every}) == len(every)
    for spec in every:
        assert spec.config().name == spec.name
        assert model_spec(spec.config()) is spec
    assert {s.loop for s in specs(CLOSED_FORMS)} == {"closed_form"}
    assert "closed_form" not in {s.loop for s in specs(TRAINED)}


def test_the_job_configs_take_exactly_their_group():
    trained = {s.name for s in specs(TRAINED)}
    closed = {s.name for s in specs(CLOSED_FORMS)}
    assert {config().name for config in typing.get_args(config_union(TRAINED))} == trained
    for name in trained:
        assert from_dict(TrainConfig, {"data": {"path": "d"}, "model": {"name": name}, "output_dir": "o"}).model.name == name
    for name in closed:
        assert from_dict(FitConfig, {"data": {"path": "d"}, "model": {"name": name}, "output_dir": "o"}).model.name == name
        with pytest.raises(ConfigError, match="unknown name"):
            from_dict(TrainConfig, {"data": {"path": "d"}, "model": {"name": name}, "output_dir": "o"})


def test_a_closed_form_fit_does_not_import_torchrec():
    code = "import sys, distrec.fit.run, jobs.fit; print('torchrec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_a_training_driver_loads_every_model_config_without_importing_torchrec():
    """The driver validates the config and starts the workers; only they build tables."""
    code = (
        "import sys; from distrec.config import from_dict; from distrec.models.registry import TRAINED, specs; "
        "from distrec.train.config import TrainConfig; import distrec.runtime.ray, jobs.train; "
        "[from_dict(TrainConfig, {'data': {'path': 'd'}, 'model': {'name': s.name}, 'output_dir': 'o'}) "
        "for s in specs(TRAINED)]; print('torchrec' in sys.modules, len(specs(TRAINED)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", str(len(specs(TRAINED)))]
