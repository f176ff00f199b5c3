"""DDS-attention compressor: a per-entity code for each row of an embedding table, and its decoder.

    x [B, d] ─ standardise ─► DDS gate ─► attention encoder ─► linked AE, down ─► code [B, c]
    code ─► quantise (float16 | int8) ─► linked AE, up ─► de-standardise ─► x̂ [B, d]

- **DDS gate** (Dynamic Data Selection): a linear scorer gives each entity a log α per feature
  group (G = d / group_size groups). In training a hard-concrete sample (Louizos, Welling &
  Kingma 2018, "Learning Sparse Neural Networks through L0 Regularization": stretch (γ, ζ) =
  (-0.1, 1.1), temperature β) gates each group and only the k largest samples pass, except that
  with probability ``keep_all_prob`` an entity keeps all groups. At inference the gate is
  deterministic (the clamped stretched sigmoid of log α) and exactly the k groups with the largest
  log α are selected. The expected number of open gates (the L0 term) is returned for an
  optional penalty.
- **Attention encoder**: each group is a token (a shared linear embedding plus a position);
  self-attention over the selected tokens (the others are masked as keys) mixes them, and a
  readout adds each token's prediction of its group back to the gated input, so the groups the
  gate dropped are imputed from the ones it kept.
- **Linked autoencoder**: down blocks Linear → BatchNorm → GELU to the code size (the last one
  ends in tanh, so codes lie in [-1, 1] and int8 needs no per-entity scale); up blocks mirror
  them, each with a residual link through its matching down layer. The link is tied, ``h @ W_down``
  (the transpose of the down layer's map), not the down layer's activation: a U-Net-style skip of
  activations would carry the input past the bottleneck, and a decoder that is given only codes
  could not use it.
- **Quantisation** runs in training with a straight-through estimator, so the decoder learns on
  exactly the values it will read back from storage.

Trained on reconstruction of the embeddings alone (see ``distrec.compress``), so nothing of the
rating data (its popularity skew included) enters the codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distrec.config import Bound, NonNegative, Positive, Probability
from distrec.device import Device

__all__ = [
    "CODE_BYTES",
    "CodeDtype",
    "CompressorConfig",
    "HardConcreteGate",
    "AttentionEncoder",
    "LinkedAutoencoder",
    "Compressor",
    "code_size",
    "quantise",
    "code_to_storage",
    "code_from_storage",
]

CodeDtype = Literal["float16", "int8"]
CODE_BYTES = {"float16": 2, "int8": 1}
INT8_LEVELS = 127  # a code in [-1, 1] is stored as round(127 · code)
GAMMA, ZETA = -0.1, 1.1  # hard-concrete stretch interval (Louizos et al. 2018)


@dataclass
class CompressorConfig:
    hidden: list[Positive[int]] = field(default_factory=lambda: [128, 64])  # down-path widths between d and the code
    group_size: Positive[int] = 1  # features per gate group / attention token
    keep_fraction: Annotated[float, Bound(gt=0, le=1)] = 0.75  # k = round(keep_fraction × groups) groups selected per entity
    keep_all_prob: Probability = 0.1  # training: probability that an entity keeps all groups
    temperature: Positive[float] = 2 / 3  # hard-concrete β
    l0_weight: NonNegative[float] = 0.0  # weight of the expected open-gate fraction in the loss
    token_dim: Positive[int] = 16
    heads: Positive[int] = 2
    code_dtype: CodeDtype = "int8"
    device: Device = "auto"  # where the workers train it; auto: the GPU where the worker has one

    def __post_init__(self) -> None:
        if self.token_dim % self.heads:
            raise ValueError(f"model.token_dim={self.token_dim} must be a multiple of model.heads={self.heads}")


def code_size(dim: int, ratio: int, dtype: CodeDtype) -> int:
    """Code width that stores a float32 row of ``dim`` in ``1/ratio`` of its bytes."""
    budget = 4 * dim / ratio
    size = budget / CODE_BYTES[dtype]
    if size < 1 or size != int(size):
        raise ValueError(
            f"a {dim}-dim float32 row ({4 * dim} bytes) at {ratio}× is {budget:g} bytes, not a whole number of "
            f"{dtype} code values; choose a ratio that divides {4 * dim // CODE_BYTES[dtype]}"
        )
    return int(size)


def quantise(code: torch.Tensor, dtype: CodeDtype) -> torch.Tensor:
    """The value the decoder will read back from storage; gradients pass straight through."""
    if dtype == "int8":
        stored = torch.round(code * INT8_LEVELS) / INT8_LEVELS
    else:
        stored = code.half().float()
    return code + (stored - code).detach()


def code_to_storage(code: torch.Tensor, dtype: CodeDtype) -> np.ndarray:
    """Codes in [-1, 1] [N, c] → int8 or float16 array [N, c]."""
    if dtype == "int8":
        return torch.round(code * INT8_LEVELS).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8).cpu().numpy()
    return code.half().cpu().numpy()


def code_from_storage(codes: np.ndarray) -> torch.Tensor:
    """The inverse of ``code_to_storage``: float32 [N, c]."""
    values = torch.from_numpy(np.ascontiguousarray(codes)).float()
    return values / INT8_LEVELS if codes.dtype == np.int8 else values


class HardConcreteGate(nn.Module):
    """Per-entity gates over ``groups`` feature groups; exactly ``k`` selected at inference."""

    def __init__(self, *, dim: int, groups: int, k: int, keep_all_prob: float, temperature: float) -> None:
        super().__init__()
        if not 1 <= k <= groups:
            raise ValueError(f"the gate selects k={k} of {groups} groups; k must be in 1..{groups}")
        self.k, self.keep_all_prob, self.temperature = k, keep_all_prob, temperature
        self.score = nn.Linear(dim, groups)  # log α [B, G]
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.constant_(self.score.bias, 2.0)  # gates start mostly open

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` [B, d] → gate values [B, G] (0 where not selected), selection mask [B, G] (bool),
        expected number of open gates [B] (the L0 term)."""
        log_alpha = self.score(x)  # [B, G]
        if self.training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.temperature)
        else:
            s = torch.sigmoid(log_alpha)
        gate = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        top = s.topk(self.k, dim=1).indices  # at inference the order of log α itself
        mask = torch.zeros_like(s, dtype=torch.bool).scatter(1, top, True)
        if self.training and self.keep_all_prob > 0:
            mask = mask | (torch.rand(s.shape[0], 1, device=s.device) < self.keep_all_prob)
        l0 = torch.sigmoid(log_alpha - self.temperature * math.log(-GAMMA / ZETA)).sum(1)
        return gate * mask, mask, l0


class AttentionEncoder(nn.Module):
    """Self-attention over feature-group tokens: [B, d] gated input → [B, d]."""

    def __init__(self, *, groups: int, group_size: int, token_dim: int, heads: int) -> None:
        super().__init__()
        self.groups, self.group_size = groups, group_size
        self.embed = nn.Linear(group_size, token_dim)
        self.position = nn.Parameter(torch.randn(groups, token_dim) * 0.02)
        self.attention = nn.MultiheadAttention(token_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(token_dim)
        self.readout = nn.Linear(token_dim, group_size)

    def forward(self, x: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        groups = x.view(b, self.groups, self.group_size) * gate[..., None]  # [B, G, g]
        tokens = self.embed(groups) + self.position  # [B, G, h]
        mixed, _ = self.attention(tokens, tokens, tokens, key_padding_mask=~mask, need_weights=False)
        tokens = self.norm(tokens + mixed)
        return (groups + self.readout(tokens)).reshape(b, -1)  # [B, d]


class _Down(nn.Module):
    def __init__(self, width_in: int, width_out: int, *, last: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)
        self.norm = nn.BatchNorm1d(width_out)
        self.last = last

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.linear(h))
        return torch.tanh(h) if self.last else F.gelu(h)


class _Up(nn.Module):
    """Maps a down block's output width back to its input width; plus the tied link."""

    def __init__(self, down: _Down, *, last: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(down.linear.out_features, down.linear.in_features)
        self.norm = None if last else nn.BatchNorm1d(down.linear.in_features)

    def forward(self, h: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
        y = self.linear(h)
        if self.norm is not None:
            y = F.gelu(self.norm(y))
        return y + h @ link  # link: the matching down layer's weight [out, in]; [B, out] @ [out, in]


class LinkedAutoencoder(nn.Module):
    """``widths`` = [d, hidden..., c]: down d → ... → c (tanh), up c → ... → d (linear output)."""

    def __init__(self, *, widths: list[int]) -> None:
        super().__init__()
        n = len(widths) - 1
        self.down = nn.ModuleList(_Down(a, b, last=k == n - 1) for k, (a, b) in enumerate(zip(widths, widths[1:])))
        self.up = nn.ModuleList(_Up(d, last=k == 0) for k, d in enumerate(self.down))  # up[k] mirrors down[k]

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.down:
            h = block(h)
        return h

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for k in reversed(range(len(self.up))):
            h = self.up[k](h, self.down[k].linear.weight)
        return h


class Compressor(nn.Module):
    """The whole model; ``encode``/``decode`` are the two halves the stored artifacts hold."""

    def __init__(self, cfg: CompressorConfig, *, dim: int, code_size: int) -> None:
        super().__init__()
        if dim % cfg.group_size:
            raise ValueError(f"model.group_size={cfg.group_size} does not divide the embedding dim {dim}")
        self.cfg, self.dim, self.code_size = cfg, dim, code_size
        groups = dim // cfg.group_size
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        k = max(1, round(cfg.keep_fraction * groups))
        self.gate = HardConcreteGate(dim=dim, groups=groups, k=k, keep_all_prob=cfg.keep_all_prob, temperature=cfg.temperature)
        self.attention = AttentionEncoder(groups=groups, group_size=cfg.group_size, token_dim=cfg.token_dim, heads=cfg.heads)
        self.autoencoder = LinkedAutoencoder(widths=[dim, *cfg.hidden, code_size])

    def set_standardisation(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Per-feature mean and standard deviation of the training rows (all workers)."""
        self.mean.copy_(mean)
        self.scale.copy_(scale.clamp_min(1e-8))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, d] → quantised code [B, c] in [-1, 1], and the L0 term [B]."""
        z = (x - self.mean) / self.scale
        gate, mask, l0 = self.gate(z)
        code = self.autoencoder.encode(self.attention(z, gate, mask))
        return quantise(code, self.cfg.code_dtype), l0

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Code [B, c] → reconstructed embeddings [B, d]."""
        return self.autoencoder.decode(code) * self.scale + self.mean

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code, l0 = self.encode(x)
        return self.decode(code), l0

    def decoder_keys(self) -> list[str]:
        """The state-dict entries ``decode`` reads (the up path, the tied links, the standardisation)."""
        links = {f"autoencoder.down.{k}.linear.weight" for k in range(len(self.autoencoder.down))}
        return [n for n in self.state_dict() if n in links or n in ("mean", "scale") or n.startswith("autoencoder.up.")]

    def encoder_keys(self) -> list[str]:
        """The state-dict entries ``encode`` reads (everything but the up path)."""
        return [n for n in self.state_dict() if not n.startswith("autoencoder.up.")]
