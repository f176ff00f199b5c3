"""The usual mistakes end in one paragraph that says what to do, exit code 2, no traceback."""

from __future__ import annotations

import importlib

import pytest

from jobs.train import main as train
from tests.helpers import tiny_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("d") / "tiny")
    tiny_synthetic(out, ratings=2000, users=100, items=50)
    return out


def _run(capsys, *args) -> str:
    code = train(["--config", "configs/mf/ml-100k.yaml", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def test_wrong_dataset_path(capsys, tmp_path):
    err = _run(capsys, f"data.path={tmp_path}/nowhere", f"output_dir={tmp_path}/o")
    assert "no such directory" in err and "jobs/prepare.py" in err


@pytest.mark.parametrize("job, config", [("fit", "configs/ease/ml-1m.yaml"), ("distill", "configs/distill/ml-1m.yaml"),
                                         ("compare", "configs/compare/ml-1m-infae.yaml")])  # fmt: skip
def test_every_job_says_how_to_prepare_a_missing_dataset(capsys, tmp_path, job, config):
    main = importlib.import_module(f"jobs.{job}").main
    assert main(["--config", config, f"data.path={tmp_path}/nowhere", f"output_dir={tmp_path}/o"]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "jobs/prepare.py" in err and "Traceback" not in err


def test_bias_in_factor_row_refuses_a_row_wise_optimizer(capsys, tmp_path):
    err = _run(capsys, "model.bias_in_factor_row=true", f"output_dir={tmp_path}/o")  # the config's rowwise_adagrad
    assert "model.bias_in_factor_row=true needs an element-wise optimizer" in err


def test_dataset_not_prepared(capsys, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "part-00000.parquet").write_bytes(b"x")
    err = _run(capsys, f"data.path={tmp_path}/half", f"output_dir={tmp_path}/o")
    assert "no _manifest.json" in err and "jobs/prepare.py" in err


def test_config_key_typo(capsys, tmp_path):
    err = _run(capsys, "train.epochz=3")
    assert "unknown key 'train.epochz' (did you mean 'epochs'?)" in err and "configs/mf/ml-100k.yaml" in err


def test_asking_for_gpus_that_are_not_there(capsys, data, tmp_path):
    err = _run(capsys, f"data.path={data}", "data.split=random", f"output_dir={tmp_path}/o", "ray.use_gpu=true")
    assert "no usable GPU" in err and "ray.use_gpu=false" in err


def test_fused_adam_on_cpu(capsys, data, tmp_path):
    err = _run(capsys, f"data.path={data}", "data.split=random", f"output_dir={tmp_path}/o", "optim.sparse=adam")
    assert "fused Adam runs only on GPUs" in err and "rowwise_adagrad" in err


def test_unreachable_ray_cluster(no_ray, capsys, data, tmp_path):
    from tests.helpers import free_port

    err = _run(
        capsys, f"data.path={data}", "data.split=random", f"output_dir={tmp_path}/o", f"ray.address=127.0.0.1:{free_port()}"
    )
    assert "cannot reach the Ray cluster" in err and "ray start --head" in err


def test_unknown_split(capsys, data, tmp_path):
    err = _run(capsys, f"data.path={data}", f"output_dir={tmp_path}/o", "data.split=u9")
    assert "no split named 'u9'" in err and "--split" in err
