"""requirements/gpu.txt stays the GPU twin of cpu.txt: the same torch, fbgemm and torchrec versions,
the CUDA fbgemm-gpu (never the CPU build beside it, which would shadow it, nor the reverse), and
the same common.txt. CI cannot install it (no GPU); ``make gpu-check`` does."""

from __future__ import annotations

from pathlib import Path

REQ = Path(__file__).resolve().parent.parent / "requirements"


def _pins(name: str) -> tuple[dict[str, str], list[str]]:
    pins, other = {}, []
    for line in (REQ / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            package, version = line.split("==")
            pins[package.lower().replace("_", "-")] = version
        elif line:
            other.append(line)
    return pins, other


def test_gpu_requirements_mirror_the_cpu_stack():
    cpu, _ = _pins("cpu.txt")
    gpu, other = _pins("gpu.txt")
    assert gpu["torch"] == cpu["torch"] and gpu["torchrec"] == cpu["torchrec"]
    assert gpu["fbgemm-gpu"] == cpu["fbgemm-gpu-cpu"]
    assert "fbgemm-gpu-cpu" not in gpu and "fbgemm-gpu" not in cpu
    assert "-r common.txt" in other
    common, _ = _pins("common.txt")
    assert not {"torch", "torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu"} & set(common)  # only the stack files pin these
