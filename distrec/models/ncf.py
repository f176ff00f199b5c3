"""Neural collaborative filtering with content profiles and item-item attention, for ratings.

NeuMF (He et al. 2017) scores a (user, item) pair from a user vector ``p_u`` and an item vector
``q_i``:

    r̂(u, i) = μ + b_i + b_u + o_u + h_gᵀ (p_u ⊙ q_i) + MLP([p_u, q_i])

Each side is either an ID embedding (a TorchRec table) or content, or both added:

- item (``item_input``): ``q_i = W_c x_i`` from the item's features ``x_i`` (multi-hot genres,
  standardised year and its missing flag; distrec.data.item_features) and/or the row of the
  table ``item``. ``b_i`` is the row of ``item_bias`` (0 for items never trained on).
- user (``user_input``): the row of the table ``user`` (plus ``b_u`` from ``user_bias``), and/or
  the user's profile, built from the items they rated and their ratings:
  ``e_j = q_j + (r_uj − μ) w_r``, ``p_u = Σ_j a_ij e_j``. With ``aggregate: mean``,
  ``a_ij = 1 / n^β``. With ``aggregate: attention`` each rated item is weighed by a learned
  similarity to the target item, as in NAIS (He et al. 2018):

      s_ij = hᵀ ReLU(W (e_j ⊙ q_i) + c),   a_ij = exp(s_ij) / (Σ_k exp(s_ik))^β

  (β < 1 lets a long history count for more than a short one.) The profile also gives the
  offset ``o_u = n/(n + shrink) · Σ_j ā_ij (r_uj − μ − b_j)``: the user's rating level as the
  weighted mean residual of their ratings (ā: the weights normalised to sum to 1), shrunk for
  short histories. The target item is masked out of its user's history (it would give away the
  rating being predicted).

A user held out of training is thus scored from their profile alone, and an item never
trained on from its features. ``loss: mse`` regresses ratings; ``loss: bce`` fits
``σ(z)`` to the rating rescaled to [0, 1] (a soft label) and predicts ``lo + (hi − lo) σ(z)``.

Batches (``features``): the KJT has one stride ``S`` for every key, the same on every worker
(TorchRec's pooled all-to-all needs it): the batch's users take its first B bags, the distinct
items of the batch (targets and histories) its first U bags, and the other bags are empty. Each
distinct item is looked up once and gathered into ``[B, L, dim]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import torch
from torch import nn

from distrec.config import Bound, NonNegative, Positive
from distrec.data.histories import RatingHistories
from distrec.models.spec import ModelContext, ModelSpec
from distrec.models.tables import TableSpec, embedding_collection, kjt, padded_width

if TYPE_CHECKING:
    from torchrec import KeyedJaggedTensor

__all__ = ["NCFConfig", "NCF", "SPECS"]

_PAD = -1.0e4  # attention score of padded history entries: exp() of it is 0


@dataclass
class NCFConfig:
    name: Literal["ncf"] = "ncf"
    dim: Positive[int] = 32
    user_input: Literal["id", "profile", "both"] = "profile"
    item_input: Literal["id", "content", "both"] = "both"
    aggregate: Literal["mean", "attention"] = "attention"
    attention_dim: Positive[int] = 16
    beta: Annotated[float, Bound(gt=0, le=1)] = 0.5  # smoothing exponent of the attention (or mean) denominator
    shrink: NonNegative[float] = 5.0  # the profile offset is shrunk by n / (n + shrink) for n rated items
    max_history: Positive[int] = 200  # rated items per user in a profile (a fixed random subset beyond)
    hidden: list[Positive[int]] = field(default_factory=lambda: [64, 32])  # the MLP part
    loss: Literal["mse", "bce"] = "mse"
    init_std: NonNegative[float] = 0.01
    l2: NonNegative[float] = 0.0  # on the ID rows a rating touches (user, target item)

    @property
    def profiles(self) -> bool:
        return self.user_input != "id"

    @property
    def content(self) -> bool:
        return self.item_input != "id"


class NCF(nn.Module):
    def __init__(
        self,
        cfg: NCFConfig,
        *,
        num_users: int,
        num_items: int,
        global_mean: float,
        rating_range: tuple[float, float],
        histories: RatingHistories | None,
        item_features: torch.Tensor | None,
        device: torch.device,
    ) -> None:
        super().__init__()
        if cfg.profiles and histories is None:
            raise ValueError("model.user_input uses profiles, but no rating histories were given")
        if cfg.content and item_features is None:
            raise ValueError("model.item_input uses content, but no item features were given")
        self.cfg = cfg
        self.explains = cfg.profiles and cfg.aggregate == "attention"  # forward(..., explain=True) gives weights
        self.dim = d = cfg.dim
        self.num_items = num_items
        self.histories = histories
        self.item_x = item_features  # float32 [I, F]; data, not a parameter (never synchronised)
        self.lo, self.hi = rating_range
        width = padded_width(d)

        def normal(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            values = torch.zeros(rows, cols)
            values[:, :d] = torch.randn(rows, d, generator=gen) * cfg.init_std
            return values

        def zeros(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            return torch.zeros(rows, cols)

        self.tables = [TableSpec("item_bias", num_items, 4, zeros)]
        self.export_groups: dict[str, tuple[str, ...]] = {}
        if cfg.item_input != "content":
            self.tables.append(TableSpec("item", num_items, width, normal))
            self.export_groups["item"] = ("item", "item_bias")
        if cfg.user_input != "profile":
            # zeros: a user never trained on (held out) adds nothing to its profile
            self.tables += [TableSpec("user", num_users, width, zeros), TableSpec("user_bias", num_users, 4, zeros)]
            self.export_groups["user"] = ("user", "user_bias")
        self.sparse = embedding_collection(self.tables, device)

        dense = torch.device("cpu") if device.type == "meta" else device
        self.mean = nn.Parameter(torch.tensor([float(global_mean)], device=dense))
        if cfg.content:
            self.content = nn.Linear(item_features.shape[1], d, device=dense)  # type: ignore[union-attr]
        if cfg.profiles:
            self.rating_dir = nn.Parameter(torch.randn(d, device=dense) * cfg.init_std)
        if cfg.profiles and cfg.aggregate == "attention":
            self.attention = nn.Sequential(
                nn.Linear(d, cfg.attention_dim, device=dense),
                nn.ReLU(),
                nn.Linear(cfg.attention_dim, 1, bias=False, device=dense),
            )
        self.gmf = nn.Linear(d, 1, bias=False, device=dense)
        layers: list[nn.Module] = []
        for a, b in zip([2 * d] + cfg.hidden[:-1], cfg.hidden):
            layers += [nn.Linear(a, b, device=dense), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(cfg.hidden[-1], 1, device=dense))

    # -- batches -------------------------------------------------------------------------
    def stride(self, batch: int) -> int:
        """Bags per key of a batch of ``batch`` rows: enough for its users and its distinct items."""
        return max(batch, min(self.num_items, batch * (1 + (self.cfg.max_history if self.cfg.profiles else 0))))

    def features(self, user: torch.Tensor, item: torch.Tensor) -> tuple[KeyedJaggedTensor, dict[str, torch.Tensor]]:
        """The KJT and dense inputs for rating pairs ``user`` [B], ``item`` [B]."""
        b = len(user)
        inputs: dict[str, torch.Tensor] = {}
        items = item
        if self.cfg.profiles:
            block = self.histories.block(user.numpy(), max_len=self.cfg.max_history)  # type: ignore[union-attr]
            items = torch.cat([item, block.item[block.mask]])
            inputs.update(hist_rating=block.rating, hist_mask=block.mask)
        distinct, at = torch.unique(items, return_inverse=True)  # [U], [B (+ history entries)]
        inputs["target"] = at[:b]
        if self.cfg.profiles:
            hist = torch.zeros_like(block.item)
            hist[block.mask] = at[b:]
            inputs["hist"] = hist  # [B, L]: positions in ``distinct``
        if self.cfg.content:
            inputs["item_x"] = self.item_x[distinct]  # [U, F]
        inputs["num_distinct"] = torch.tensor(len(distinct))
        stride = self.stride(b)
        ids, lengths = [], []
        for t in self.tables:
            keys = user if t.name.startswith("user") else distinct
            ids.append(keys)
            lengths.append(
                torch.cat([torch.ones(len(keys), dtype=torch.int32), torch.zeros(stride - len(keys), dtype=torch.int32)])
            )
        return kjt([t.name for t in self.tables], torch.cat(ids), torch.cat(lengths)), inputs

    # -- model ---------------------------------------------------------------------------
    def forward(
        self,
        kjt: KeyedJaggedTensor,
        inputs: dict[str, torch.Tensor],
        rating: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        explain: bool = False,
    ) -> torch.Tensor:
        """Predictions [B]; given ``rating`` and ``weight`` [B] (0 for padding rows), the training
        objective averaged over the batch; with ``explain``, the attention weights [B, L]."""
        pooled = self.sparse(kjt).to_dict()  # table → [S, width]
        d, u, b = self.dim, int(inputs["num_distinct"]), len(inputs["target"])
        target = inputs["target"]
        parts = [self.content(inputs["item_x"])] if self.cfg.content else []  # [U, d]
        parts += [pooled["item"][:u, :d]] if "item" in pooled else []
        q = sum(parts[1:], parts[0])  # [U, d]
        item_bias = pooled["item_bias"][:u, 0]  # [U]
        qi, bi = q[target], item_bias[target]  # [B, d], [B]
        users: list[torch.Tensor] = []  # the parts of p_u
        offset: torch.Tensor | float = 0.0
        if self.cfg.profiles:
            hist = inputs["hist"]  # [B, L]
            mask = inputs["hist_mask"] & (hist != target[:, None])  # the target never describes itself
            fmask = mask.float()
            dev = (inputs["hist_rating"] - self.mean) * fmask  # [B, L]
            e = q[hist] + dev[..., None] * self.rating_dir  # [B, L, d]
            weights, normalised = self._weights(e, qi, mask)
            if explain:
                return normalised
            users.append((weights[..., None] * e).sum(1))  # [B, d]
            n = fmask.sum(1)
            residual = (dev - item_bias[hist]) * fmask  # [B, L]
            offset = (normalised * residual).sum(1) * n / (n + self.cfg.shrink)
        l2: torch.Tensor | float = pooled["item"][:u, :d][target].square().sum(1) if "item" in pooled else 0.0
        bu: torch.Tensor | float = 0.0
        if "user" in pooled:
            pu = pooled["user"][:b, :d]
            users.append(pu)
            bu = pooled["user_bias"][:b, 0]
            l2 = l2 + pu.square().sum(1)
        p = sum(users[1:], users[0])  # [B, d]
        z = bi + bu + offset + self.gmf(p * qi).squeeze(-1) + self.mlp(torch.cat([p, qi], 1)).squeeze(-1)
        pred = self._predict(z)
        if rating is None:
            return pred
        if self.cfg.loss == "mse":
            loss = (pred - rating).square()
        else:
            soft = ((rating - self.lo) / (self.hi - self.lo)).clamp(0, 1)
            loss = nn.functional.binary_cross_entropy_with_logits(self._logit(z), soft, reduction="none")
        return (weight * (loss + self.cfg.l2 * l2)).sum() / b

    def _weights(self, e: torch.Tensor, qi: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History weights [B, L]: as used in ``p_u`` (denominator to the power β), and
        normalised to sum to 1 (0 on masked entries)."""
        fmask = mask.float()
        if self.cfg.aggregate == "mean":
            n = fmask.sum(1, keepdim=True).clamp_min(1)
            return fmask / n**self.cfg.beta, fmask / n
        s = self.attention(e * qi[:, None, :]).squeeze(-1).masked_fill(~mask, _PAD)  # [B, L]
        lse = torch.logsumexp(s, dim=1, keepdim=True)  # [B, 1]
        return torch.exp(s - self.cfg.beta * lse) * fmask, torch.exp(s - lse) * fmask

    def _logit(self, z: torch.Tensor) -> torch.Tensor:
        level = float(((self.mean.detach() - self.lo) / (self.hi - self.lo)).clamp(1e-3, 1 - 1e-3))
        return z + math.log(level / (1 - level))

    def _predict(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss == "mse":
            return self.mean + z
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self._logit(z))

    # -- export --------------------------------------------------------------------------
    def export(self, name: str, blocks: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The ID part of a block of users or items: ``vector`` [R, dim], ``bias`` [R] (an item's
        content part is computed from its features, not stored)."""
        return {"vector": blocks[name][:, : self.dim].numpy(), "bias": blocks[f"{name}_bias"][:, 0].numpy()}

    def export_meta(self) -> dict[str, float | str]:
        return {
            "global_mean": float(self.mean.detach().cpu()[0]),
            "user_input": self.cfg.user_input,
            "item_input": self.cfg.item_input,
        }


def build(cfg: NCFConfig, ctx: ModelContext, device: torch.device) -> NCF:
    assert ctx.rating_range is not None, "NCF needs the rating scale"
    return NCF(
        cfg,
        num_users=ctx.num_users,
        num_items=ctx.num_items,
        global_mean=ctx.global_mean,
        rating_range=ctx.rating_range,
        histories=ctx.histories,
        item_features=ctx.item_features.dense() if ctx.item_features else None,
        device=device,
    )


SPECS = (ModelSpec(name="ncf", config=NCFConfig, build=build, task="rating", needs=("histories", "item_features")),)
