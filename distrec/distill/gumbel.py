"""Multi-Gumbel sampling (Distill-CF, Sachdeva et al., NeurIPS 2022, §4): a synthetic user's row
is the sum of ``draws`` Gumbel-softmax samples over the items, clamped to [0, 1] (hard-tanh):

    X̃_u = min(1, Σ_{s=1..S} softmax((logits_u + g_s) / τ)),    g_s ~ Gumbel(0, 1) i.i.d. [n, I]

Each draw puts mass 1 on the row, so a row has at most S interactions' worth of mass, and its
expected cardinality is what the cardinality regulariser steers.

Keeping the S draws for autograd would cost S × n × I floats (200 × 500 × 3,706 ≈ 1.5 GB for
ML-1M; 200 × 500 × 17,770 ≈ 7 GB for Netflix). ``MultiGumbel`` keeps the logits and the seed
instead and regenerates each draw's noise in backward, as the paper's custom VJP does with its
saved PRNG keys: memory O(n × I) whatever S, at the price of computing each softmax twice.

The noise is counter-based: draw d of row r at item i gets u = ((h >> 9) + ½) / 2²³ from
h = lowbias32(key[d, r] ^ (i · 0x9E3779B9 mod 2³²)), where key[d, r] hashes the seed with (d, r),
and g = −log(−log u). A value depends on (seed, d, r, i) only, not on a generator's position, so
backward redraws exactly the forward's noise however the work is split, and the CPU and a GPU
draw the same noise (up to the rounding of log). On a CPU, in float32, the C++ kernel
(distrec/kernels/gumbel_cpu.cpp) does the whole forward, and the whole backward, in one pass per
row: no tensor of draws × rows × items is made. Elsewhere (a GPU, float64, no build) the same
formula runs in torch ops a chunk of draws at a time ([c, n, I] with c·n·I ≤ ``CHUNK_ELEMENTS``).
"""

from __future__ import annotations

import torch

from distrec import kernels

__all__ = ["MultiGumbel", "multi_gumbel", "gumbel_noise", "draw_keys", "CHUNK_ELEMENTS"]

CHUNK_ELEMENTS = 1 << 24  # noise values drawn at once by the torch ops (64 MiB in float32)


def _wrap(c: int) -> int:
    """A 32-bit constant as the int32 with the same bits."""
    return c - (1 << 32) if c >= 1 << 31 else c


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 integer hash (a bijection of 32-bit values) on int32 tensors: the
    bits of uint32 arithmetic, as int32 products wrap; shifts are masked to be logical."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _wrap(0x7FEB352D)
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _wrap(0x846CA68B)
    return x ^ ((x >> 16) & 0xFFFF)


def draw_keys(seed: int, draws: int, rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 32-bit key of every (draw, row) [draws, rows] int32: distinct for distinct (d, r)."""
    if draws * rows >= 1 << 31:
        raise ValueError(f"{draws} draws x {rows} rows exceed the 2^31 noise streams")
    folded = (seed ^ (seed >> 32)) & 0xFFFFFFFF
    base = int(_lowbias32(torch.tensor([_wrap(folded)], dtype=torch.int32))[0])
    counter = torch.arange(draws * rows, dtype=torch.int32, device=device).reshape(draws, rows)
    return _lowbias32(_lowbias32(counter) ^ base)


def gumbel_noise(keys: torch.Tensor, items: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gumbel(0, 1) noise [*keys.shape, items] of the streams ``keys`` (see the module docstring)."""
    salt = torch.arange(items, dtype=torch.int32, device=keys.device) * _wrap(0x9E3779B9)
    h = _lowbias32(keys[..., None] ^ salt)
    u = (((h >> 9) & 0x7FFFFF).to(dtype) + 0.5) * 2.0**-23  # in (0, 1): never 0 or 1
    return u.log_().neg_().log_().neg_()


def _softmax_chunks(logits: torch.Tensor, keys: torch.Tensor, tau: float):
    """softmax((logits + g)/τ) [c, n, I] for successive chunks of the draws (torch ops)."""
    per = max(1, CHUNK_ELEMENTS // max(1, logits.numel()))
    for start in range(0, keys.shape[0], per):
        z = gumbel_noise(keys[start : start + per], logits.shape[-1], dtype=logits.dtype)
        z.add_(logits).div_(tau)
        z.sub_(z.amax(-1, keepdim=True)).exp_()
        yield z.div_(z.sum(-1, keepdim=True))


def _fused(logits: torch.Tensor) -> bool:
    """Whether the C++ kernel takes these logits: float32 on a CPU, where it is built."""
    return logits.device.type == "cpu" and logits.dtype == torch.float32 and kernels.load()


class MultiGumbel(torch.autograd.Function):
    """Σ_s softmax((logits + g_s)/τ) [n, I] (before the clamp); backward redraws g_s from ``seed``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, seed: int, draws: int, tau: float) -> torch.Tensor:
        keys = draw_keys(seed, draws, logits.shape[0], logits.device)
        ctx.save_for_backward(logits)
        ctx.seed, ctx.draws, ctx.tau = seed, draws, tau
        if _fused(logits):
            return torch.ops.distrec.gumbel_forward(logits.contiguous(), keys, tau)
        total = torch.zeros_like(logits)
        for p in _softmax_chunks(logits, keys, tau):
            total += p.sum(0)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (logits,) = ctx.saved_tensors
        keys = draw_keys(ctx.seed, ctx.draws, logits.shape[0], logits.device)  # the forward's noise, redrawn
        if _fused(logits):
            return torch.ops.distrec.gumbel_backward(logits.contiguous(), grad, keys, ctx.tau), None, None, None
        grad_logits = torch.zeros_like(logits)
        for p in _softmax_chunks(logits, keys, ctx.tau):
            # softmax's VJP summed over the chunk's draws c: Σ_c p_c ⊙ (g − ⟨g, p_c⟩) = g ⊙ Σ_c p_c − Σ_c ⟨g, p_c⟩ p_c
            # (no [c, n, I] temporaries); 1/τ from the inner division
            dots = torch.einsum("cni,ni->cn", p, grad)
            grad_logits += grad * p.sum(0) - torch.einsum("cni,cn->ni", p, dots)
        return grad_logits / ctx.tau, None, None, None


def multi_gumbel(logits: torch.Tensor, *, seed: int, draws: int, tau: float) -> torch.Tensor:
    """The synthetic interaction matrix X̃ [n, I], values in [0, 1], differentiable in ``logits`` [n, I]."""
    return MultiGumbel.apply(logits, seed, draws, tau).clamp(max=1.0)  # hard-tanh: the sum is never negative
