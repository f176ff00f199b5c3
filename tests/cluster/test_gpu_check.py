"""``make gpu-check`` on a machine without NVIDIA GPUs stops at once, exit 2, having installed nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver: make gpu-check would run")
def test_gpu_check_refuses_without_a_gpu(tmp_path):
    venv = tmp_path / "venv-gpu"
    done = subprocess.run(
        ["bash", str(ROOT / "cluster" / "gpu-check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GPU_VENV": str(venv), "OUT": str(tmp_path / "out")},
        timeout=60,
    )
    assert done.returncode == 2
    assert "no NVIDIA GPU or driver here" in done.stderr
    assert not venv.exists() and not (tmp_path / "out").exists()


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "cluster" / "gpu-check.sh")]).returncode == 0
