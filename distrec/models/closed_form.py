"""Top-k models with a closed-form fit: EASE, ∞-AE and the popularity baseline.

Each is built from the training interactions (``X``, users × items, 0/1) and then solved once
per regularisation strength λ; the λ search on validation is in ``distrec/fit/search.py``. Each
is declared in ``SPECS`` (models/registry.py collects them with the trained models).

- **EASE** (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019): item-item weights
  ``B = I − P·diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹``, i.e. ``B_ij = −P_ij / P_jj`` and a
  zero diagonal; a user's scores are ``x_u B``. ``P`` comes from a Cholesky factorisation.
- **∞-AE** (Sachdeva et al., "Infinite Recommendation Networks", NeurIPS 2022): kernel ridge
  regression from a user's row to itself with the NTK of an infinitely wide ReLU autoencoder
  (``distrec/models/ntk.py``): ``α = (K + λ·tr(K)/n·I)⁻¹ X_s`` over a support of n users
  (``K = Θ(X_s, X_s)``), and scores ``Θ(x_u, X_s) α``. As the authors' code, the support is
  the training matrix and the regulariser is relative to the kernel's mean diagonal.
- **PopRec**: every user gets the items ranked by their number of training interactions.

Memory (``dtype`` bytes s; see the README's memory plan): EASE peaks at 3·s·I² (the Gram
matrix, its factor and P); ∞-AE at s·(2n² + 2n·I) (K, its factor, X_s, α). When the
support does not fit ``memory_gb``, ∞-AE samples the largest support that does (uniformly over
users with a training interaction, seeded), as the paper did with 5% of Netflix's users.

Device (``model.device``, see distrec/device.py): the Gram matrix, the kernel, the solves and
the scores live on the device the job resolved and passes in, and the default budget is 60 % of
that device's free memory. Only users' index arrays cross from the host, once per block.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from distrec.config import NonNegative, Positive
from distrec.data.user_items import UserItems
from distrec.device import Device, device_memory_bytes
from distrec.errors import UserError
from distrec.eval.ranking import Scorer
from distrec.models.ntk import ntk
from distrec.models.spec import ModelSpec

__all__ = [
    "EASEConfig",
    "InfAEConfig",
    "PopRecConfig",
    "ClosedForm",
    "NotPositiveDefinite",
    "EASE",
    "InfiniteAE",
    "PopRec",
    "SPECS",
    "check_memory",
    "ease_bytes",
    "infae_bytes",
    "max_support",
    "gram_block",
]

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
BLOCK = 2048  # rows of X (or K) formed at once while building the Gram matrix / kernel


@dataclass
class EASEConfig:
    name: Literal["ease"] = "ease"
    lambdas: list[NonNegative[float]] = field(default_factory=lambda: [100.0, 200.0, 300.0, 500.0, 800.0, 1200.0])
    dtype: Literal["float32", "float64"] = "float64"  # of the Gram matrix and its Cholesky solve
    memory_gb: Positive[float] | None = None  # budget for the solve; None = 60% of the device's free memory
    device: Device = "auto"  # auto: the GPU where torch sees one, else the CPU

    def __post_init__(self) -> None:
        _check_lambdas(self.lambdas)


@dataclass
class InfAEConfig:
    name: Literal["infae"] = "infae"
    depth: Positive[int] = 1  # hidden layers of the (infinitely wide) ReLU network
    w_var: Positive[float] = 2.0  # W_std²
    b_var: NonNegative[float] = 0.01  # b_std²
    lambdas: list[NonNegative[float]] = field(default_factory=lambda: [0.0, 1.0, 5.0, 20.0, 50.0, 100.0])  # the paper's grid
    dtype: Literal["float32", "float64"] = "float32"
    support_users: Positive[int] | None = None  # users in the kernel's support (a uniform sample); None = all
    memory_gb: Positive[float] | None = None  # budget for K, its factor, X_s and α; None = 60% of the device's free memory
    seed: NonNegative[int] = 0  # of the support sample
    device: Device = "auto"  # auto: the GPU where torch sees one, else the CPU (Distill-CF: where it runs)

    def __post_init__(self) -> None:
        _check_lambdas(self.lambdas)


@dataclass
class PopRecConfig:
    name: Literal["poprec"] = "poprec"
    device: Device = "auto"


def _check_lambdas(lambdas: list[float]) -> None:
    if not lambdas:
        raise ValueError("model.lambdas: give at least one λ to search")


class NotPositiveDefinite(ArithmeticError):
    """The regularised system has no Cholesky factor in this precision (λ too small)."""


class ClosedForm(Protocol):
    lambdas: list[float]  # the grid searched on validation; empty = nothing to regularise
    device: torch.device  # where its weights and scores live

    def solve(self, lam: float | None) -> Any:
        """The fitted weights for regularisation ``lam`` (None when ``lambdas`` is empty)."""

    def scorer(self, fitted: Any, context: UserItems) -> Scorer:
        """Scores of all items for users seen through ``context`` (their rows of X)."""

    def describe(self) -> dict[str, Any]:
        """What was fitted (sizes, sampling), for metrics.json."""


def ease_bytes(num_items: int, dtype: str) -> int:
    """Peak of EASE: XᵀX, the factor and P while solving (then XᵀX, B and B in float32 while scoring)."""
    return 3 * DTYPES[dtype].itemsize * num_items**2


def infae_bytes(support: int, num_items: int, dtype: str) -> int:
    return DTYPES[dtype].itemsize * (2 * support**2 + 2 * support * num_items)


def max_support(num_items: int, budget_bytes: float, dtype: str) -> int:
    """The largest n with ``infae_bytes(n) <= budget``: the root of 2s·n² + 2s·I·n = budget."""
    half = budget_bytes / (2 * DTYPES[dtype].itemsize)
    return int((-num_items + math.sqrt(num_items**2 + 4 * half)) / 2)


def _budget(memory_gb: float | None, device: torch.device) -> float:
    return memory_gb * 2**30 if memory_gb is not None else 0.6 * device_memory_bytes(device)


def gram_block(x: torch.Tensor, *, dense: bool) -> torch.Tensor:
    """XᵀX [I, I] (float32) of a block of users' 0/1 rows ``x`` [b, I], sparse CSR. On the CPU
    as a sparse × dense product (the block's nonzeros only); ``dense`` (on a GPU) densifies the
    block and makes it one GEMM, the product GPUs are built for. Counts are exact in float32
    below 2^24."""
    if dense:
        rows = x.to_dense()
        return rows.T @ rows
    return x.t() @ x.to_dense()


def _factor(a: torch.Tensor, ridge: float, what: str) -> torch.Tensor:
    """The Cholesky factor of ``a + ridge·I``; ``a`` is shifted in place and restored exactly
    (its saved diagonal is copied back), so no second n×n copy is ever made."""
    diagonal = a.diagonal().clone()
    a.diagonal().add_(ridge)
    try:
        factor, info = torch.linalg.cholesky_ex(a)
    finally:
        a.diagonal().copy_(diagonal)
    if int(info) != 0:
        raise NotPositiveDefinite(f"{what} is not positive definite in {a.dtype} (leading minor {int(info)})")
    return factor


def check_memory(
    cfg: EASEConfig | InfAEConfig | PopRecConfig, *, num_items: int, device: torch.device = torch.device("cpu")
) -> None:
    """The memory plan, before anything is read or allocated: EASE's solve must fit the budget,
    and ∞-AE's must hold at least one support user (it samples the largest support that fits)."""
    if isinstance(cfg, EASEConfig):
        need, budget = ease_bytes(num_items, cfg.dtype), _budget(cfg.memory_gb, device)
        if need > budget:
            raise UserError(
                f"EASE on {num_items} items needs about {need / 2**30:.1f} GiB in {cfg.dtype}, over the "
                f"{budget / 2**30:.1f} GiB budget of {device}; use model.dtype=float32 or raise model.memory_gb"
            )
    elif isinstance(cfg, InfAEConfig) and max_support(num_items, _budget(cfg.memory_gb, device), cfg.dtype) < 1:
        raise UserError("the memory budget does not hold even one support user; raise model.memory_gb")


class EASE:
    def __init__(self, cfg: EASEConfig, train: UserItems, *, device: torch.device = torch.device("cpu")) -> None:
        self.cfg = cfg
        self.lambdas = list(cfg.lambdas)
        self.dtype = DTYPES[cfg.dtype]
        self.device = device
        check_memory(cfg, num_items=train.num_items, device=device)
        self.num_items = train.num_items
        self.gram = torch.zeros(train.num_items, train.num_items, dtype=self.dtype, device=device)  # XᵀX [I, I]
        users = np.arange(train.num_users)
        for start in range(0, train.num_users, BLOCK):
            x = train.sparse(users[start : start + BLOCK]).to(device)  # [b, I]
            self.gram += gram_block(x, dense=device.type == "cuda").to(self.dtype)

    @classmethod
    def on_rows(cls, cfg: EASEConfig, x: torch.Tensor) -> EASE:
        """EASE whose Gram matrix is XᵀX of the given rows ``x`` [n, I] (values in [0, 1];
        Distill-CF's synthetic users) instead of a training set's users."""
        model = cls.__new__(cls)
        model.cfg, model.lambdas, model.dtype, model.num_items = cfg, list(cfg.lambdas), DTYPES[cfg.dtype], x.shape[1]
        model.device = x.device
        rows = x.detach().to(model.dtype)
        model.gram = rows.T @ rows  # [I, I]
        return model

    def solve(self, lam: float) -> torch.Tensor:
        """B [I, I] in the configured precision."""
        factor = _factor(self.gram, lam, f"XᵀX + {lam:g}·I")
        p = torch.cholesky_inverse(factor)  # P = (XᵀX + λI)⁻¹
        del factor
        b = p.div_(-p.diagonal().clone())  # B_ij = −P_ij / P_jj (column j divided by P_jj)
        b.diagonal().zero_()
        return b

    def scorer(self, fitted: torch.Tensor, context: UserItems) -> Scorer:
        weights = fitted.float()  # scoring in float32 whatever the solve's precision: ranking needs no more
        return lambda users: context.sparse(users.numpy()).to(self.device) @ weights

    def describe(self) -> dict[str, Any]:
        return {"items": self.num_items, "dtype": self.cfg.dtype}

    def export(self, fitted: torch.Tensor) -> dict[str, torch.Tensor]:
        """What serving needs (distrec/serve): B [I, I] in float32, as ``scorer`` uses it."""
        return {"B": fitted.float().contiguous()}

    def export_meta(self) -> dict[str, Any]:
        return {}


class InfiniteAE:
    def __init__(self, cfg: InfAEConfig, train: UserItems, *, device: torch.device = torch.device("cpu")) -> None:
        self.cfg = cfg
        self.lambdas = list(cfg.lambdas)
        self.dtype = DTYPES[cfg.dtype]
        self.device = device
        check_memory(cfg, num_items=train.num_items, device=device)
        active = np.flatnonzero(train.counts() > 0)
        wanted = min(cfg.support_users or len(active), len(active))
        fits = max_support(train.num_items, _budget(cfg.memory_gb, device), cfg.dtype)
        if wanted > fits:
            log.warning("a support of %d users does not fit the memory budget; sampling %d users", wanted, fits)
            wanted = fits
        if wanted < 1:
            raise UserError("no user has a training interaction, so ∞-AE has no support to build its kernel from")
        self.support = active
        if wanted < len(active):
            rng = np.random.default_rng(cfg.seed)
            self.support = np.sort(rng.choice(active, size=wanted, replace=False))
        self._build(train.dense(self.support, dtype=self.dtype, device=device), sparse_rows=True)

    @classmethod
    def on_support(cls, cfg: InfAEConfig, x: torch.Tensor) -> InfiniteAE:
        """∞-AE whose support is the given rows ``x`` [n, I] (values in [0, 1]; Distill-CF's
        synthetic users) instead of users of a training set."""
        model = cls.__new__(cls)
        model.cfg, model.lambdas, model.dtype = cfg, list(cfg.lambdas), DTYPES[cfg.dtype]
        model.device = x.device
        model.support = np.arange(len(x))
        model._build(x.detach().to(model.dtype))
        return model

    def _build(self, x: torch.Tensor, *, sparse_rows: bool = False) -> None:
        """K from the support ``x``; ``sparse_rows``: x is users' 0/1 rows, whose blocks are
        cheaper as sparse CSR (a learned, dense support is not)."""
        self.x = x  # X_s [n, I]
        n = len(x)
        self.gram = torch.empty(n, n, dtype=self.dtype, device=x.device)  # K = Θ(X_s, X_s) [n, n], built by row blocks
        for start in range(0, n, BLOCK):
            rows = self.x[start : start + BLOCK]
            self.gram[start : start + BLOCK] = self.kernel(rows.to_sparse_csr() if sparse_rows else rows)
        self.mean_diag = float(self.gram.diagonal().mean())  # tr(K)/n

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """Θ(x, X_s) [b, n] for user rows ``x`` [b, I] (dense, or sparse CSR in the model's dtype)."""
        return ntk(x.to(self.dtype), self.x, depth=self.cfg.depth, w_var=self.cfg.w_var, b_var=self.cfg.b_var)

    def solve(self, lam: float) -> torch.Tensor:
        """α = (K + λ·tr(K)/n·I)⁻¹ X_s  [n, I]."""
        factor = _factor(self.gram, lam * self.mean_diag, f"K + {lam:g}·tr(K)/n·I")
        return torch.cholesky_solve(self.x, factor)

    def scorer(self, fitted: torch.Tensor, context: UserItems) -> Scorer:
        return lambda users: (self.kernel(context.sparse(users.numpy(), dtype=self.dtype).to(self.device)) @ fitted).float()

    def describe(self) -> dict[str, Any]:
        return {"support_users": len(self.support), "depth": self.cfg.depth, "dtype": self.cfg.dtype}

    def export(self, fitted: torch.Tensor) -> dict[str, torch.Tensor]:
        """What serving needs (distrec/serve): the support X_s as CSR (``support_indptr`` [n + 1],
        ``support_indices`` [nnz], ``support_values`` [nnz]) and α [n, I], in the model's dtype;
        the kernel's parameters are ``export_meta``."""
        csr = self.x.to_sparse_csr()
        return {
            "support_indptr": csr.crow_indices().contiguous(),
            "support_indices": csr.col_indices().contiguous(),
            "support_values": csr.values().contiguous(),
            "alpha": fitted.contiguous(),
        }

    def export_meta(self) -> dict[str, Any]:
        return {"depth": self.cfg.depth, "w_var": self.cfg.w_var, "b_var": self.cfg.b_var, "dtype": self.cfg.dtype}


class PopRec:
    def __init__(self, cfg: PopRecConfig, train: UserItems, *, device: torch.device = torch.device("cpu")) -> None:
        self.lambdas: list[float] = []  # nothing to regularise
        self.device = device
        self.counts = torch.from_numpy(train.item_counts()).float().to(device)  # [I]

    def solve(self, lam: float | None) -> torch.Tensor:
        return self.counts

    def scorer(self, fitted: torch.Tensor, context: UserItems) -> Scorer:
        return lambda users: fitted.expand(len(users), -1)

    def describe(self) -> dict[str, Any]:
        return {"items": len(self.counts)}


# fitted once per λ by distrec/fit (jobs/fit.py, compare); build(cfg, train: UserItems, *, device)
SPECS = (
    ModelSpec(name="ease", config=EASEConfig, build=EASE, task="ranking", loop="closed_form"),
    ModelSpec(name="infae", config=InfAEConfig, build=InfiniteAE, task="ranking", loop="closed_form"),
    ModelSpec(name="poprec", config=PopRecConfig, build=PopRec, task="ranking", loop="closed_form"),
)
