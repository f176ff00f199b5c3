"""Two-tower retrieval: a history encoder for users, a content-aware tower for items.

    item tower: [ID embedding (TorchRec table) ‖ item features (genres, year, frozen text
                 encoder vector)] → MLP → L2-normalised vector [dim]
    user tower: [CLS] + the user's last ``history`` items, time-ordered, each token =
                 projection of the same item input + rating embedding + position embedding
                 → TransformerEncoder → CLS output → linear → L2-normalised vector [dim]
    score(u, i) = ⟨user(u), item(i)⟩ / temperature

Training is a softmax over the batch (in-batch negatives, Yi et al. 2019, "Sampling-bias-corrected
neural modeling for large corpus item recommendations"): the positives of the other rows are the
negatives of a row. Popular items are over-sampled as negatives, so with ``logq`` each logit
``s(u, j)`` is replaced by ``s(u, j) − log q_j``, ``q_j`` the probability that item j is a
batch's positive (its share of the training interactions). A column holding the row's own item
(a repeated item in the batch) is masked, so an item is never its own negative.

The ID table is shared by the item tower (feature ``item``) and the history (features
``hist0`` … ``hist{L-1}``, one per position, right-aligned: ``hist{L-1}`` is the latest item;
an empty bag is padding). TorchRec runs all of them in one lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distrec.config import Bound, NonNegative, Positive
from distrec.features.text import TextEncoderConfig
from distrec.models.spec import ModelContext, ModelSpec
from distrec.models.tables import TableSpec, embedding_collection, kjt, padded_width

if TYPE_CHECKING:
    from torchrec import KeyedJaggedTensor

__all__ = ["TwoTowerConfig", "TwoTower", "in_batch_softmax_loss", "RATING_BUCKETS", "SPECS"]

RATING_BUCKETS = 10  # a history rating r on a scale up to r_max becomes round(10 r / r_max) + 1; 0 = padding


@dataclass
class TwoTowerConfig:
    name: Literal["two_tower"] = "two_tower"
    dim: Positive[int] = 64  # the towers' output
    id_dim: Positive[int] = 32  # the item ID table's width
    history: Positive[int] = 50  # latest items of a user the encoder reads
    layers: Positive[int] = 2
    heads: Positive[int] = 4
    ffn: Positive[int] = 128
    dropout: Annotated[float, Bound(ge=0, lt=1)] = 0.0  # on the encoder; dropout masks were a quarter of a CPU step
    temperature: Positive[float] = 0.05
    logq: bool = True  # sampling-bias correction of the in-batch negatives
    init_std: NonNegative[float] = 0.05
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    eval_ks: list[Positive[int]] = field(default_factory=lambda: [10, 50])  # top-k cut-offs of val/test metrics

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"model.dim={self.dim} must be a multiple of model.heads={self.heads}")


def in_batch_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    item_ids: torch.Tensor,
    *,
    temperature: float,
    log_q: torch.Tensor | None,
    weight: torch.Tensor,
) -> torch.Tensor:
    """Mean over real rows of −log softmax(row i)[i] over the batch's items.

    ``user``, ``item``: [B, D]; ``item_ids``: [B]; ``log_q``: [B] log sampling probability of
    each row's item (None: no correction); ``weight``: [B], 0 for padding rows, which are
    neither queries nor negatives."""
    logits = user @ item.T / temperature  # [B, B]
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = item_ids[:, None] == item_ids[None, :]  # [B, B]
    drop = (same & ~torch.eye(len(item_ids), dtype=torch.bool, device=same.device)) | (weight[None, :] == 0)
    logits = logits.masked_fill(drop, float("-inf"))
    losses = -torch.diagonal(torch.log_softmax(logits, dim=1))  # [B]
    losses = torch.where(weight > 0, losses, torch.zeros_like(losses))
    return (weight * losses).sum() / weight.sum().clamp(min=1.0)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig, *, num_items: int, item_features: np.ndarray, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = padded_width(cfg.id_dim)
        dense = device if device.type != "meta" else torch.device("cpu")

        def normal(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
            return torch.randn(rows, cols, generator=gen) * cfg.init_std

        self.hist_keys = [f"hist{j}" for j in range(cfg.history)]
        self.tables = [TableSpec("item", num_items, self.width, normal, features=("item", *self.hist_keys))]
        self.export_groups: dict[str, tuple[str, ...]] = {}  # the towers' outputs are exported, not the table
        self.sparse = embedding_collection(self.tables, device)
        # Content features stay a plain tensor, not a buffer: DDP would broadcast a buffer every step.
        self.item_features = torch.as_tensor(item_features, dtype=torch.float32)  # [I, F]
        n_in = self.width + self.item_features.shape[1]
        self.item_mlp = nn.Sequential(nn.Linear(n_in, cfg.ffn), nn.ReLU(), nn.Linear(cfg.ffn, cfg.dim)).to(dense)
        self.token = nn.Linear(n_in, cfg.dim).to(dense)
        self.rating = nn.Embedding(RATING_BUCKETS + 2, cfg.dim).to(dense)
        self.position = nn.Parameter(torch.randn(cfg.history + 1, cfg.dim, device=dense) * 0.02)
        self.cls = nn.Parameter(torch.randn(cfg.dim, device=dense) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ffn, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False).to(dense)
        self.user_head = nn.Linear(cfg.dim, cfg.dim).to(dense)

    def features(self, item: torch.Tensor, history: torch.Tensor) -> KeyedJaggedTensor:
        """The KJT for target items ``item`` [B] (−1: none) and histories ``history`` [B, L]
        (item ids, −1 = padding, right-aligned)."""
        cols = [item] + [history[:, j] for j in range(history.shape[1])]
        lengths = torch.cat([(c >= 0).to(torch.int32) for c in cols])
        values = torch.cat([c[c >= 0] for c in cols])
        return kjt(["item", *self.hist_keys], values, lengths)

    def _project(self, layer: nn.Linear, ids: torch.Tensor, id_vectors: torch.Tensor) -> torch.Tensor:
        """``layer`` applied to [ID vector ‖ content features] of items ``ids`` [...] (−1: any).

        The layer is linear, so its content part is computed once per distinct item in the
        batch and gathered: a history of 50 items repeats the popular ones many times."""
        w_id, w_content = layer.weight[:, : self.width], layer.weight[:, self.width :]
        distinct, where = torch.unique(ids.clamp(min=0), return_inverse=True)
        content = self.item_features[distinct.cpu()].to(id_vectors.device) @ w_content.T  # [distinct, out]
        return id_vectors @ w_id.T + content[where] + layer.bias  # [..., out]

    def item_vectors(self, ids: torch.Tensor, id_vectors: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self._project(self.item_mlp[0], ids, id_vectors))
        return F.normalize(self.item_mlp[2](hidden), dim=-1)  # [B, dim]

    def user_vectors(self, history: torch.Tensor, hist_rating: torch.Tensor, hist_vectors: torch.Tensor) -> torch.Tensor:
        b, length = history.shape
        tokens = self._project(self.token, history, hist_vectors) + self.rating(hist_rating)  # [B, L, dim]
        tokens = torch.cat([self.cls.expand(b, 1, -1), tokens], dim=1) + self.position[None]  # [B, L+1, dim]
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=history.device), history < 0], dim=1)  # [B, L+1]
        out = self.encoder(tokens, src_key_padding_mask=pad)  # [B, L+1, dim]
        return F.normalize(self.user_head(out[:, 0]), dim=-1)  # [B, dim]: the CLS token

    def forward(
        self,
        kjt: KeyedJaggedTensor,
        item: torch.Tensor,
        history: torch.Tensor,
        hist_rating: torch.Tensor,
        towers: Literal["both", "user", "item"] = "both",
        log_q: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """With ``weight`` [B]: the in-batch softmax loss. Otherwise (user [B, dim], item
        [B, dim]) vectors; ``towers`` says which are computed (the other is empty)."""
        values = self.sparse(kjt).values()  # [B, (L+1)·W], keys in KJT order
        b, w = item.shape[0], self.width
        empty = values.new_zeros(0, self.cfg.dim)
        items = self.item_vectors(item, values[:, :w]) if towers != "user" else empty
        users = self.user_vectors(history, hist_rating, values[:, w:].reshape(b, -1, w)) if towers != "item" else empty
        if weight is None:
            return users, items
        return in_batch_softmax_loss(
            users, items, item, temperature=self.cfg.temperature, log_q=log_q if self.cfg.logq else None, weight=weight
        )

    def export_meta(self) -> dict[str, float]:
        return {"temperature": self.cfg.temperature}


def build(cfg: TwoTowerConfig, ctx: ModelContext, device: torch.device) -> TwoTower:
    features = ctx.item_vectors if ctx.item_vectors is not None else np.zeros((ctx.num_items, 0), np.float32)
    return TwoTower(cfg, num_items=ctx.num_items, item_features=features, device=device)


SPECS = (ModelSpec(name="two_tower", config=TwoTowerConfig, build=build, task="retrieval"),)
