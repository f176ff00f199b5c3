"""Multi-Gumbel sampling (Distill-CF, Sachdeva et al., NeurIPS 2022, §4): a synthetic user's row
is the sum of ``draws`` Gumbel-softmax samples over the items, clamped to [0, 1] (hard-tanh):

    X̃_u = min(1, Σ_{s=1..S} softmax((logits_u + g_s) / τ)),    g_s ~ Gumbel(0, 1) i.i.d. [n, I]

Each draw puts mass 1 on the row, so a row has at most S interactions' worth of mass, and its
expected cardinality is what the cardinality regulariser steers.

Keeping the S draws for autograd would cost S × n × I floats (200 × 500 × 3,706 ≈ 1.5 GB for
ML-1M; 200 × 500 × 17,770 ≈ 7 GB for Netflix). ``MultiGumbel`` keeps the logits and one RNG
seed instead and regenerates each draw's noise in backward, as the paper's custom VJP does with
its saved PRNG keys: memory O(n × I) whatever S, at the price of computing each softmax twice.
Draws are taken a chunk at a time ([c, n, I] with c·n·I ≤ ``CHUNK_ELEMENTS``, the same chunks in
both passes) so small matrices are not dominated by per-operation overhead.
"""

from __future__ import annotations

import torch

__all__ = ["MultiGumbel", "multi_gumbel", "gumbel_noise", "CHUNK_ELEMENTS"]

CHUNK_ELEMENTS = 1 << 24  # noise values drawn at once (64 MiB in float32)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise −log(−log U), U ~ U[0, 1), drawn from ``generator`` (so it can be redrawn).
    (``exponential_`` would save a log but is 4× slower than ``rand`` on CPU.) U = 0 gives −∞:
    a probability of 0 for that item in that draw, which is harmless."""
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    return u.log_().neg_().log_().neg_()


def _chunks(draws: int, shape: torch.Size) -> list[int]:
    per = max(1, min(draws, CHUNK_ELEMENTS // max(1, shape.numel())))
    return [min(per, draws - start) for start in range(0, draws, per)]


def _draws(logits: torch.Tensor, seed: int, draws: int, tau: float):
    """Yields softmax((logits + g)/τ) [c, n, I] for successive chunks of the draws, from ``seed``
    (computed in place in the noise's buffer: one [c, n, I] tensor per chunk)."""
    generator = torch.Generator(device=logits.device).manual_seed(seed)
    for c in _chunks(draws, logits.shape):
        z = gumbel_noise((c, *logits.shape), generator, dtype=logits.dtype, device=logits.device)
        z.add_(logits).div_(tau)
        z.sub_(z.amax(-1, keepdim=True)).exp_()
        yield z.div_(z.sum(-1, keepdim=True))


class MultiGumbel(torch.autograd.Function):
    """Σ_s softmax((logits + g_s)/τ) [n, I] (before the clamp); backward redraws g_s from ``seed``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, seed: int, draws: int, tau: float) -> torch.Tensor:
        total = torch.zeros_like(logits)
        for p in _draws(logits, seed, draws, tau):
            total += p.sum(0)
        ctx.save_for_backward(logits)
        ctx.seed, ctx.draws, ctx.tau = seed, draws, tau
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (logits,) = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)
        for p in _draws(logits, ctx.seed, ctx.draws, ctx.tau):  # the same noise as in forward, redrawn
            # softmax's VJP summed over the chunk's draws c: Σ_c p_c ⊙ (g − ⟨g, p_c⟩) = g ⊙ Σ_c p_c − Σ_c ⟨g, p_c⟩ p_c
            # (no [c, n, I] temporaries); 1/τ from the inner division
            dots = torch.einsum("cni,ni->cn", p, grad)
            grad_logits += grad * p.sum(0) - torch.einsum("cni,cn->ni", p, dots)
        return grad_logits / ctx.tau, None, None, None


def multi_gumbel(logits: torch.Tensor, *, seed: int, draws: int, tau: float) -> torch.Tensor:
    """The synthetic interaction matrix X̃ [n, I], values in [0, 1], differentiable in ``logits`` [n, I]."""
    return MultiGumbel.apply(logits, seed, draws, tau).clamp(max=1.0)  # hard-tanh: the sum is never negative
