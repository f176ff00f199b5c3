"""What a run exported, checked before anything starts, and loaded as a model that scores items.

``inspect_run`` reads manifests only (cheap, on the driver): it finds the run's exports, the
model that wrote them and its dataset, and refuses a run it cannot serve with the reason and
what is missing. ``load_model`` (in each replica) reads the verified files:

- ``mf``, ``mf_bpr``, ``two_tower``: ``<run>/embeddings/{user,item}`` (jobs/train.py). Scores
  are inner products of ``[p_u, 1]`` with ``[q_i, b_i]`` (b_i: the item table's ``bias``, or 0),
  plus the user's offset μ + b_u for biased MF, so exact and approximate search share one
  item matrix.
- ``ease``, ``infae``: ``<run>/weights/weights.safetensors`` (jobs/fit.py; distrec/fit/export.py).
  A user is their 0/1 row x of rated items; scores are ``x B`` (EASE) or ``Θ(x, X_s) α`` (∞-AE).

A new user (the POST endpoint) is folded in: biased MF by distrec/models/foldin.py's ridge
solve against the frozen items; MF-BPR by the same solve with every liked item at the score
a rated item has on average for the trained users (its ranking has no user bias, so the user
bias is held at 0); EASE and ∞-AE by the user's row, exactly as for a known user. Two-tower
users come from a history encoder that lives only in the checkpoint: not folded in (stated).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load

from distrec.data.dataset import InteractionDataset, Interactions
from distrec.errors import DataError
from distrec.fit.export import SCHEMA_VERSION as WEIGHTS_VERSION
from distrec.fit.export import WEIGHTS, WEIGHTS_FILE
from distrec.models.foldin import fold_in_users
from distrec.models.ntk import ntk
from distrec.serve.catalogue import Catalogue
from distrec.serve.errors import NotServable
from distrec.serve.topk import matmul_blocks
from distrec.storage import StoredDirectory, absolute, filesystem, join, read_text
from distrec.storage.embeddings import EMBEDDINGS, read_embeddings
from distrec.storage.failures import storage_errors

__all__ = ["RunSpec", "Query", "FactorModel", "RowModel", "inspect_run", "load_model"]

FACTOR_MODELS = ("mf", "mf_bpr", "two_tower")
ROW_MODELS = ("ease", "infae")
NOT_SERVED = {
    "neumf": "its exported rows are the GMF and MLP embeddings; scores also need the MLP tower and the fusion "
    "layer, which only the training checkpoint holds, and this service reads no checkpoints (missing: an export "
    "of the dense tower)",
    "ncf": "its exported rows are the ID parts only; scores also need the content projection, the profile "
    "aggregation and the MLP, which only the training checkpoint holds, and this service reads no checkpoints "
    "(missing: an export of the dense layers)",
    "lightgcn": "it exports its ego embeddings E⁽⁰⁾, while its scores use the embeddings propagated over the "
    "training graph (missing: the propagated embeddings)",
    "poprec": "its ranking is the same for every user (the training counts), so there is nothing personal to serve",
}
TWO_TOWER_FOLD_IN = (
    "two_tower: a new user's vector comes from the history encoder (the transformer in the training checkpoint), "
    "which this service does not load; its exports hold the towers' outputs for the users it was trained on"
)
PINNED = 1e6  # a user-bias L2 that holds the folded-in bias at 0 (models whose ranking has none)
MIN_L2 = 1e-2  # the fold-in's L2 where the model trained without one (the solve needs it)


@dataclass(frozen=True)
class RunSpec:
    """A servable run: its absolute URI, model, exports (``embeddings`` or ``weights``) and dataset."""

    run: str
    model: str
    exports: str
    dataset: str


@dataclass
class Query:
    """What a model scores items for: ``vectors`` [B, D] (factor models: ``[p_u, 1]``; row
    models: the users' 0/1 rows, sparse CSR) and ``offset`` [B] added to every score."""

    vectors: torch.Tensor
    offset: np.ndarray


# -- the run ----------------------------------------------------------------------------------
def _stored(uri: str, kind: str) -> StoredDirectory | None:
    """The committed directory at ``uri``, or None when there is no directory at all (a directory
    without a manifest is an incomplete export: its DataError stands)."""
    return StoredDirectory(uri, kind=kind) if _exists(uri) else None


def _exists(uri: str) -> bool:
    fs, root = filesystem(uri)
    with storage_errors(uri, "look for"):
        return fs.exists(root)


def inspect_run(run: str) -> RunSpec:
    """The run's servable exports, or a ``NotServable`` naming what is missing."""
    run = absolute(run).rstrip("/")
    user, item = (_stored(join(run, EMBEDDINGS, side), EMBEDDINGS) for side in ("user", "item"))
    weights = _stored(join(run, "weights"), WEIGHTS)
    if user is not None or item is not None:
        if user is None or item is None:
            raise NotServable(f"{run}: embeddings/{'user' if user is None else 'item'} is missing (the export is incomplete)")
        model, meta, exports = str(item.meta.get("model")), item.meta, EMBEDDINGS
    elif weights is not None:
        model, meta, exports = str(weights.meta.get("model")), weights.meta, "weights"
    else:
        model = _metrics_model(run)
        if model in NOT_SERVED:
            raise NotServable(f"{run}: model {model} is not served: {NOT_SERVED[model]}")
        raise NotServable(
            f"{run}: nothing to serve: no embeddings/user and embeddings/item (jobs/train.py exports them unless "
            "train.export_embeddings=false) and no weights/ (jobs/fit.py writes them for ease and infae)"
        )
    if model in NOT_SERVED:
        raise NotServable(f"{run}: model {model} is not served: {NOT_SERVED[model]}")
    if model not in (FACTOR_MODELS if exports == EMBEDDINGS else ROW_MODELS):
        raise NotServable(f"{run}: its {exports} were written by model {model!r}, which this service does not know")
    if "dataset" not in meta:
        raise DataError(f"{run}: the {exports} manifest does not name the dataset they were trained on")
    dataset = absolute(str(meta["dataset"]))
    try:
        InteractionDataset(dataset)
    except DataError as e:
        raise DataError(f"{run}: its dataset {dataset} (named in its manifest) cannot be read: {e}") from None
    return RunSpec(run=run, model=model, exports=exports, dataset=dataset)


def _metrics_model(run: str) -> str | None:
    """The model a run's metrics.json names, where there is one (to say why a run has no exports)."""
    if not _exists(join(run, "metrics.json")):
        return None
    try:
        return json.loads(read_text(join(run, "metrics.json"))).get("model")
    except (ValueError, AttributeError):
        return None


# -- models -----------------------------------------------------------------------------------
@dataclass
class FactorModel:
    """``s(u, i) = [p_u, 1] · [q_i, b_i] + offset_u``."""

    name: str
    users: np.ndarray  # float32 [U, d]
    user_offset: np.ndarray  # float32 [U]: μ + b_u (biased MF), else 0
    items: torch.Tensor  # float32 [I, d + 1]: [q_i, b_i]
    unit: torch.Tensor  # float32 [I, d]: q_i / |q_i|, for similar items (cosine)
    fold_in_params: dict[str, float] | None  # foldin.py's global_mean, l2, bias_l2 and the default rating
    fold_in_refusal: str | None = None

    @property
    def ann_items(self) -> np.ndarray:
        return self.items.numpy()

    def known(self, users: np.ndarray, rated: list[np.ndarray]) -> Query:
        p = self.users[users]
        return Query(torch.from_numpy(np.hstack([p, np.ones((len(p), 1), np.float32)])), self.user_offset[users])

    def new(self, items: np.ndarray, ratings: np.ndarray | None) -> Query:
        if self.fold_in_params is None:
            raise NotServable(self.fold_in_refusal or f"{self.name}: no fold-in")
        f = self.fold_in_params
        target = np.full(len(items), f["rating"], np.float32) if ratings is None or f.get("implicit") else ratings
        d = self.items.shape[1] - 1
        q, b = self.items[:, :d].numpy(), self.items[:, d].numpy()
        pairs = Interactions(user=np.zeros(len(items), np.int64), item=items, rating=target.astype(np.float32))
        p, b_u = fold_in_users(pairs, np.zeros(1, np.int64), item_vector=q, item_bias=b,
                               global_mean=f["global_mean"], l2=f["l2"], bias_l2=f["bias_l2"])  # fmt: skip
        offset = np.float32(f["global_mean"]) + b_u if not f.get("implicit") else np.zeros(1, np.float32)
        return Query(torch.from_numpy(np.hstack([p, np.ones((1, 1), np.float32)])), offset)

    def blocks(self, query: Query) -> Iterable[tuple[int, torch.Tensor]]:
        return matmul_blocks(query.vectors, self.items)

    def similar(self, item: int) -> Iterable[tuple[int, torch.Tensor]]:
        return matmul_blocks(self.unit[item][None, :], self.unit)


@dataclass
class RowModel:
    """EASE (``x B``) or ∞-AE (``Θ(x, X_s) α``) over users' 0/1 rows x."""

    name: str
    num_items: int
    weights: dict[str, torch.Tensor]  # EASE: B [I, I]; ∞-AE: support [n, I] (dense), alpha [n, I]
    kernel: dict[str, Any]  # ∞-AE: depth, w_var, b_var
    fold_in_refusal: str | None = None
    ann_items: None = None  # not an inner product of fixed vectors: no HNSW index

    def rows(self, rated: list[np.ndarray]) -> torch.Tensor:
        """The users' 0/1 rows [B, I] as sparse CSR (items sorted, repeats once)."""
        items = [np.unique(r) for r in rated]
        indptr = np.zeros(len(items) + 1, np.int64)
        np.cumsum([len(r) for r in items], out=indptr[1:])
        flat = np.concatenate(items) if items else np.zeros(0, np.int64)
        dtype = self.weights["alpha" if self.name == "infae" else "B"].dtype
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(flat.astype(np.int64)),
                                       torch.ones(len(flat), dtype=dtype), size=(len(items), self.num_items),
                                       check_invariants=False)  # built sorted and in range here  # fmt: skip

    def known(self, users: np.ndarray, rated: list[np.ndarray]) -> Query:
        return Query(self.rows(rated), np.zeros(len(rated), np.float32))

    def new(self, items: np.ndarray, ratings: np.ndarray | None) -> Query:
        return self.known(np.zeros(1, np.int64), [items])

    def blocks(self, query: Query) -> Iterable[tuple[int, torch.Tensor]]:
        if self.name == "ease":
            return [(0, (query.vectors @ self.weights["B"]).float())]
        k = ntk(query.vectors, self.weights["support"], **self.kernel)  # [B, n]
        return [(0, (k @ self.weights["alpha"]).float())]

    def similar(self, item: int) -> Iterable[tuple[int, torch.Tensor]]:
        """The scores of a user who has only this item (EASE: row i of B)."""
        return self.blocks(self.new(np.array([item]), None))


def load_model(spec: RunSpec, catalogue: Catalogue) -> FactorModel | RowModel:
    """The run's model, every file checked against its manifest (size and sha256)."""
    if spec.exports == "weights":
        return _row_model(spec, catalogue)
    user = read_embeddings(join(spec.run, EMBEDDINGS, "user"))
    item = read_embeddings(join(spec.run, EMBEDDINGS, "item"))
    for table, want, what in ((user, catalogue.num_users, "users"), (item, catalogue.num_items, "items")):
        if len(table.index) != want or not np.array_equal(table.index, np.arange(want)):
            raise DataError(f"{spec.run}: the exported {what} table has {len(table.index)} rows, its dataset {want} {what}")
    q = item.vector.astype(np.float32)
    b = item.columns.get("bias", np.zeros(len(q), np.float32)).astype(np.float32)
    offset = np.zeros(len(user.vector), np.float32)
    params: dict[str, float] | None = None
    if spec.model == "mf":
        mu = float(item.meta.get("global_mean", 0.0))
        offset = mu + user.columns.get("bias", offset).astype(np.float32)
        if "l2" in item.meta:
            params = {
                "global_mean": mu,
                "l2": float(item.meta["l2"]),
                "bias_l2": float(item.meta["bias_l2"]),
                "rating": catalogue.rating_max,
            }
    elif spec.model == "mf_bpr":
        params = {"global_mean": 0.0, "l2": max(float(item.meta.get("l2", 0.0)), MIN_L2), "bias_l2": PINNED,
                  "rating": _mean_rated_score(user.vector, q, b, catalogue), "implicit": 1.0}  # fmt: skip
    refusal = None
    if params is None:
        refusal = (
            TWO_TOWER_FOLD_IN
            if spec.model == "two_tower"
            else (
                f"{spec.model}: this run's export predates the L2 strengths that folding in needs; re-run training to export them"
            )
        )
    unit = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return FactorModel(name=spec.model, users=user.vector.astype(np.float32), user_offset=offset.astype(np.float32),
                       items=torch.from_numpy(np.hstack([q, b[:, None]])), unit=torch.from_numpy(unit.astype(np.float32)),
                       fold_in_params=params, fold_in_refusal=refusal)  # fmt: skip


def _mean_rated_score(p: np.ndarray, q: np.ndarray, b: np.ndarray, catalogue: Catalogue, sample: int = 100_000) -> float:
    """The mean score ``p_u · q_i + b_i`` of (a seeded sample of) the rated pairs."""
    rows = np.random.default_rng(0).choice(len(catalogue.items), size=min(sample, len(catalogue.items)), replace=False)
    users = np.searchsorted(catalogue.indptr, rows, side="right") - 1
    items = catalogue.items[rows]
    return float(np.mean(np.einsum("nd,nd->n", p[users], q[items]) + b[items])) if len(rows) else 1.0


def _row_model(spec: RunSpec, catalogue: Catalogue) -> RowModel:
    store = StoredDirectory(join(spec.run, "weights"), kind=WEIGHTS, schema_version=WEIGHTS_VERSION)
    try:
        tensors = load(store.read_bytes(WEIGHTS_FILE))
    except Exception as e:  # safetensors' own error types
        raise DataError(f"{join(spec.run, 'weights', WEIGHTS_FILE)}: not a readable safetensors file ({e})") from None
    items = catalogue.num_items
    if spec.model == "ease":
        _check_shape(spec, tensors, "B", (items, items))
        return RowModel(name="ease", num_items=items, weights={"B": tensors["B"]}, kernel={})
    alpha = tensors.get("alpha")
    _check_shape(spec, tensors, "alpha", (alpha.shape[0] if alpha is not None else -1, items))
    n = alpha.shape[0]  # type: ignore[union-attr]
    _check_shape(spec, tensors, "support_indptr", (n + 1,))
    try:  # read from storage: the invariants (indices in range, sorted rows) are checked
        support = torch.sparse_csr_tensor(tensors["support_indptr"], tensors["support_indices"], tensors["support_values"],
                                          size=(n, items), check_invariants=True).to_dense()  # fmt: skip
    except (KeyError, RuntimeError) as e:
        raise DataError(f"{join(spec.run, 'weights', WEIGHTS_FILE)}: not a valid ∞-AE support ({e})") from None
    kernel = {"depth": int(store.meta["depth"]), "w_var": float(store.meta["w_var"]), "b_var": float(store.meta["b_var"])}
    return RowModel(name="infae", num_items=items, weights={"support": support, "alpha": alpha}, kernel=kernel)  # type: ignore[dict-item]


def _check_shape(spec: RunSpec, tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> None:
    where = join(spec.run, "weights", WEIGHTS_FILE)
    if name not in tensors:
        raise DataError(f"{where}: no tensor {name!r} ({spec.model} needs it)")
    tensor = tensors[name]
    if tuple(tensor.shape) != shape:
        raise DataError(f"{where}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{where}: tensor {name!r} holds NaN or infinite values")
