"""GLocal-K: an item-based autoencoder with local and global kernels (Han et al., CIKM 2021,
"GLocal-K: Global and Local Kernels for Recommender Systems"; defaults are the paper's ML-100K
settings, from the authors' code).

Each item's rating vector over users, ``r_i`` [U] (0 = not rated), is encoded and decoded:

    h = σ(σ(r_i (W₁ ⊙ K₁) + b₁) (W₂ ⊙ K₂) + b₂)          # [500], two hidden layers
    r̂_i = h (W₃ ⊙ K₃) + b₃                             # [U]

**Local kernel.** Every layer ``n_in → n_out`` learns vectors ``u_a`` [n_in, 5] and ``v_b``
[n_out, 5]; its weights are reweighted by the finite-support RBF kernel

    K[a, b] = max(0, 1 − |u_a − v_b|²)

so a weight whose pair of vectors lies 1 or further apart counts exactly 0 (the sparsified
weight matrix, Muller et al. 2018), and λ_s |K|² pushes pairs apart.

**Global kernel** (fine-tuning only). Item-characteristic pooling averages the pre-trained
autoencoder's output over users (one number per item); its dot product with a learned
[items, 3·3] matrix, times ``dot_scale``, is a 3 × 3 convolution kernel; the rating matrix
(items × users, as an image) convolved with it (zero "same" padding, ReLU) is the input of
the same autoencoder. The pooling is linear, so it is computed from ``h`` without building
the decoder's [items, U] output: mean_u(h W + b) = h · mean_u(W) + mean(b).

Objective (both stages, as the authors' code: TensorFlow's ``l2_loss`` halves every sum):

    ½ Σ_observed (r − r̂)² + Σ_layers (λ₂/2 |W|² + λ_s/2 |K|²)

Items are the batch dimension, so the rows can be split across workers: the pooling is then a
sum over every worker's items, all-reduced with autograd (see ``global_kernel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from distrec.config import NonNegative, Positive
from distrec.device import Device
from distrec.models.spec import ModelContext, ModelSpec

__all__ = ["GLocalKConfig", "GLocalK", "LocalKernelLayer", "local_kernel", "SPECS"]


@dataclass
class GLocalKConfig:
    name: Literal["glocal_k"] = "glocal_k"
    hidden: Positive[int] = 500  # units per hidden layer
    layers: Positive[int] = 2  # hidden layers (the decoder layer comes on top)
    kernel_dim: Positive[int] = 5  # length of the local kernel's vectors u, v
    lambda_2: NonNegative[float] = 20.0  # L2 on the weights W
    lambda_s: NonNegative[float] = 0.006  # L2 on the local kernels K (sparsity)
    gk_size: Positive[int] = 3  # global convolution kernel is gk_size × gk_size
    dot_scale: Positive[float] = 1.0  # scale of the pooled-items · kernel dot product
    pretrain_epochs: NonNegative[int] = 30  # the first epochs of train.epochs pre-train; the rest fine-tune
    pretrain_iters: Positive[int] = 5  # optimizer iterations per pre-training epoch
    finetune_iters: Positive[int] = 5  # optimizer iterations per fine-tuning epoch
    history_size: Positive[int] = 10  # L-BFGS memory (the authors' maxcor)
    device: Device = "auto"  # auto: the worker's GPU when ray.use_gpu gave it one, else the CPU

    def __post_init__(self) -> None:
        if self.gk_size % 2 == 0:
            raise ValueError("model.gk_size must be odd (the convolution keeps the matrix's shape)")


def local_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """max(0, 1 − |u_a − v_b|²) for u [A, d], v [B, d] → [A, B]; exactly 0 outside the support."""
    sq = u.square().sum(1, keepdim=True) + v.square().sum(1) - 2.0 * (u @ v.T)  # [A, B]
    return torch.clamp(1.0 - sq, min=0.0)


def _glorot(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """TensorFlow's default initializer (the authors' weights and biases): U(±√(6 / (fan_in + fan_out)));
    a vector of n counts as fan_in = fan_out = n."""
    fans = shape[0] + shape[-1]
    return (torch.rand(shape, generator=gen) * 2 - 1) * math.sqrt(6.0 / fans)


def _trunc_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    out = torch.empty(shape)
    return nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=gen)


class LocalKernelLayer(nn.Module):
    """``act(x (W ⊙ K(u, v)) + b)``: a dense layer whose weights the local kernel sparsifies."""

    def __init__(self, n_in: int, n_out: int, *, kernel_dim: int, activation: str, gen: torch.Generator) -> None:
        super().__init__()
        self.W = nn.Parameter(_glorot((n_in, n_out), gen))
        self.u = nn.Parameter(_trunc_normal((n_in, kernel_dim), 1e-3, gen))
        self.v = nn.Parameter(_trunc_normal((n_out, kernel_dim), 1e-3, gen))
        self.b = nn.Parameter(_glorot((n_out,), gen))
        self.activation = activation

    def kernel(self) -> torch.Tensor:
        return local_kernel(self.u, self.v)  # [n_in, n_out]

    def effective_weight(self) -> torch.Tensor:
        return self.W * self.kernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.effective_weight() + self.b
        return torch.sigmoid(y) if self.activation == "sigmoid" else y

    def regularizer(self, lambda_2: float, lambda_s: float) -> torch.Tensor:
        return 0.5 * lambda_2 * self.W.square().sum() + 0.5 * lambda_s * self.kernel().square().sum()


class GLocalK(nn.Module):
    """The autoencoder over item rows; ``forward(rows, stage=...)`` predicts the same rows."""

    def __init__(self, cfg: GLocalKConfig, *, num_users: int, num_items: int, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        sizes = [num_users] + [cfg.hidden] * cfg.layers
        self.encoder = nn.ModuleList(
            LocalKernelLayer(a, b, kernel_dim=cfg.kernel_dim, activation="sigmoid", gen=gen) for a, b in zip(sizes, sizes[1:])
        )
        self.decoder = LocalKernelLayer(cfg.hidden, num_users, kernel_dim=cfg.kernel_dim, activation="identity", gen=gen)
        self.conv_kernel = nn.Parameter(_trunc_normal((num_items, cfg.gk_size**2), 0.1, gen))  # [I, gk²]

    def layers(self) -> list[LocalKernelLayer]:
        return [*self.encoder, self.decoder]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder:
            x = layer(x)
        return x  # [N, hidden]

    def global_kernel(self, rows: torch.Tensor, first_item: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
        """The gk × gk convolution kernel from the rows ``[first_item, first_item + N)`` of the
        rating matrix, summed over every worker's rows (autograd-aware all-reduce in ``group``;
        a group of its own keeps it apart from DDP's gradient all-reduces)."""
        dec = self.decoder
        w = dec.effective_weight()  # [hidden, U]
        pooled = self.encode(rows) @ w.mean(1) + dec.b.mean()  # [N]: item-characteristic pooling
        part = pooled @ self.conv_kernel[first_item : first_item + rows.shape[0]]  # [gk²]
        if dist.is_initialized() and dist.get_world_size() > 1:
            part = dist.nn.functional.all_reduce(
                part, group=group or dist.group.WORLD
            )  # backward: the sum of every worker's gradient
        k = self.cfg.gk_size
        return (part * self.cfg.dot_scale).view(1, 1, k, k)

    def convolve(self, padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """ReLU(rating matrix ∗ kernel): ``padded`` [N + gk − 1, U] holds the rows with gk // 2
        neighbour rows (zeros past the matrix) above and below; returns [N, U]."""
        half = self.cfg.gk_size // 2
        out = F.conv2d(padded[None, None], kernel, padding=(0, half))  # [1, 1, N, U]
        return torch.relu(out[0, 0])

    def forward(
        self,
        padded: torch.Tensor,
        *,
        first_item: int,
        stage: Literal["pretrain", "finetune"],
        group: dist.ProcessGroup | None = None,
    ) -> torch.Tensor:
        """Predicted ratings [N, U] for the N item rows inside ``padded`` (see ``convolve``)."""
        half = self.cfg.gk_size // 2
        rows = padded[half : padded.shape[0] - half]  # [N, U]
        if stage == "finetune":
            rows = self.convolve(padded, self.global_kernel(rows, first_item, group))
        return self.decoder(self.encode(rows))

    def regularizer(self) -> torch.Tensor:
        return sum(layer.regularizer(self.cfg.lambda_2, self.cfg.lambda_s) for layer in self.layers())

    @staticmethod
    def data_loss(pred: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """½ Σ over observed entries (rating > 0) of the squared error."""
        return 0.5 * torch.where(rows > 0, rows - pred, 0.0).square().sum()

    def kernel_zero_fraction(self) -> dict[str, float]:
        """Per layer, the fraction of weights the local kernel switches off exactly."""
        with torch.no_grad():
            return {f"layer{k}": float((layer.kernel() == 0).float().mean()) for k, layer in enumerate(self.layers())}


def build(cfg: GLocalKConfig, ctx: ModelContext, device: torch.device) -> GLocalK:
    """Initialised on the CPU from the run's seed (the same weights on any device), then moved."""
    return GLocalK(cfg, num_users=ctx.num_users, num_items=ctx.num_items, seed=ctx.seed).to(device)


# no embedding tables: trained by distrec/train/dense_worker.py, item rows under DDP
SPECS = (ModelSpec(name="glocal_k", config=GLocalKConfig, build=build, task="rating", loop="dense"),)
