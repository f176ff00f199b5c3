"""Where a torch-only model computes: ``model.device: auto | cpu | cuda`` in its config.

EASE, ∞-AE, Distill-CF, the compressor and GLocal-K are plain torch, so one code path serves
both devices: tensors and random generators are created on the resolved device, and the memory a
solve may use is planned against that device's memory. A job resolves its device once
(``resolve_device``) and hands the ``torch.device`` down. ``auto`` is the GPU where torch sees
one, else the CPU; ``cuda`` on a machine without a GPU is refused with a message naming the key.
A Ray worker passes ``allow_gpu=ray.use_gpu``: Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for a
worker it gave no GPU, so such a worker would otherwise see, and take, its node's GPUs.
"""

from __future__ import annotations

from typing import Literal

import torch

from distrec.errors import UserError
from distrec.resources import available_memory_bytes

__all__ = ["Device", "resolve_device", "device_memory_bytes"]

Device = Literal["auto", "cpu", "cuda"]


def resolve_device(name: Device, *, allow_gpu: bool = True, key: str = "model.device") -> torch.device:
    if name == "cuda" and not allow_gpu:
        raise UserError(f"{key}=cuda needs ray.use_gpu=true: a Ray worker without a GPU must not use one")
    if name == "cpu" or not allow_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "cuda":
        raise UserError(
            f"{key}=cuda, but torch sees no GPU here (torch.cuda.is_available() is False); use {key}=auto or {key}=cpu"
        )
    return torch.device("cpu")


def device_memory_bytes(device: torch.device) -> int:
    """What a new allocation on ``device`` can have now: the GPU's free memory, or the host's
    available memory for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return available_memory_bytes()
