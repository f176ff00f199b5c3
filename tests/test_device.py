"""``model.device: auto | cpu | cuda``: validated on load, resolved once per job, refused where
it cannot be honoured (tests that need CUDA itself are marked ``gpu``; see tests/gpu/)."""

from __future__ import annotations

import pytest
import torch

from distrec.compress.config import CompressConfig
from distrec.config import ConfigError, from_dict, load_config
from distrec.device import device_memory_bytes, resolve_device
from distrec.distill.config import DistillConfig
from distrec.errors import UserError
from distrec.fit.config import FitConfig
from distrec.train.config import TrainConfig
from jobs.fit import main as fit_job

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_cpu_and_auto_resolve_here_and_a_worker_without_a_gpu_stays_on_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto", allow_gpu=False) == torch.device("cpu")
    with pytest.raises(UserError, match="model.device=cuda needs ray.use_gpu=true"):
        resolve_device("cuda", allow_gpu=False)
    assert device_memory_bytes(torch.device("cpu")) > 0


@no_cuda
def test_cuda_without_a_gpu_is_refused_naming_the_key():
    with pytest.raises(UserError, match=r"model.device=cuda, but torch sees no GPU here.*model.device=auto"):
        resolve_device("cuda")


def test_the_device_is_validated_on_load():
    with pytest.raises(ConfigError, match=r"model.device.*expected one of \['auto', 'cpu', 'cuda'\], got 'gpu'"):
        load_config(FitConfig, "configs/ease/ml-1m.yaml", ["model.device=gpu"])
    assert load_config(FitConfig, "configs/infae/ml-1m.yaml", ["model.device=cpu"]).model.device == "cpu"


@pytest.mark.parametrize("cls, raw", [
    (TrainConfig, {"data": {"path": "d"}, "model": {"name": "glocal_k", "device": "cuda"}, "output_dir": "o"}),
    (CompressConfig, {"source": {"run": "r"}, "model": {"device": "cuda"}, "output_dir": "o"}),
    (DistillConfig, {"data": {"path": "d"}, "model": {"device": "cuda"}, "ray": {"num_workers": 1}, "output_dir": "o"}),
])  # fmt: skip
def test_cuda_on_ray_workers_needs_use_gpu(cls, raw):
    with pytest.raises(
        ConfigError, match="model.device=cuda needs ray.use_gpu=true|model.device=cuda on Ray workers needs ray.use_gpu=true"
    ):
        from_dict(cls, raw)
    raw["ray"] = {**raw.get("ray", {}), "use_gpu": True}
    assert from_dict(cls, raw).model.device == "cuda"


@no_cuda
def test_fit_job_with_cuda_on_a_cpu_machine_exits_2(tmp_path, capsys):
    from tests.helpers import tiny_synthetic

    data = str(tmp_path / "data")
    tiny_synthetic(data, split="user-ratio:0.8/0.1/0.1")
    code = fit_job(
        ["--config", "configs/ease/ml-1m.yaml", f"data.path={data}", f"output_dir={tmp_path / 'out'}", "model.device=cuda"]
    )
    assert code == 2 and "model.device=cuda, but torch sees no GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
