"""Alternating least squares for factor models: explicit ratings (ALS-WR), implicit feedback
(iALS) and Bayesian MF by Gibbs sampling (BPMF), as batched tensor ops over the rows of one side.

A half-sweep holds one side's factors fixed (the *table*, rows ``y_i``) and solves every row of
the other side at once from its ratings (CSR, ``Rows``). Row u's system is

    A_u = P + Σ_{i ∈ I_u} a_ui · y_i y_iᵀ + s_u · diag(λ)        b_u = p + Σ_{i ∈ I_u} t_ui · y_i

    objective                       P       p     a_ui       t_ui               s_u
    explicit (ALS-WR, Zhou 2008)    0       0     1          r − μ − b_i        n_u^ν   (ν = 1: λ·n_u)
    implicit (iALS, Hu 2008)        YᵀY     0     c_ui − 1   c_ui               W_u^ν   (ν = 0: plain λ)
    bayesian (BPMF, Salakhutdinov   Λ       Λμ    τ          τ·(r − μ − b_i)    0,  x_u ~ N(A⁻¹b, A⁻¹)
             & Mnih 2008)

**Implicit** (Hu, Koren & Volinsky 2008): every (user, item) pair is in the loss, preference 1
where observed and 0 elsewhere, with confidence ``c = 1 + α·r`` (``confidence: rating``) or
``1 + α`` (``binary``) on observed pairs and 1 elsewhere. The Gramian trick: Σ over all items of
``c·y yᵀ`` is ``YᵀY`` (one [k, k] matrix shared by every row) plus the observed items' ``(c − 1)·y yᵀ``,
so a row costs its own ratings, never the whole catalogue. ``W_u = Σ_i c_ui`` over all items is
the row's total weight; ``reg_exponent`` ν scales λ by ``W_u^ν`` (Rendle et al. 2021's
frequency-scaled regularisation; 0, implicit's choice, is a plain λ).

**Biases** (explicit, Bayesian): each stored row is ``[factors (d), own bias]``. As the fixed side
it enters as features ``[y_i, 1]`` with its bias moved into the target, so the row's factors and
bias ``[x_u, b_u]`` (k = d + 1) come from one system; λ's last entry is ``bias_l2``.

**Bayesian** (BPMF): Gaussian likelihood with precision τ; each side's rows have a Normal prior
whose mean μ and precision Λ (over factors *and* bias) have a Normal–Wishart hyper-prior (μ₀ = 0,
β₀ = ``prior_beta``, W₀ = I, ν₀ = k). A half-sweep first draws (μ, Λ) from their posterior given
the side's current rows (``draw_hyper``), then every row from its conditional posterior (the
table above). τ is fixed (``noise_precision``) or drawn from its Gamma(1, 1)-prior posterior
after each sweep (``draw_precision``); that draw is libFM's/myfm's, the rest is BPMF's.

**Batches.** Rows are taken by decreasing rating count; a batch of B rows is gathered padded to
its longest row L, ``Y`` [B, L, k] with weight 0 on the padding, B chosen so that
``B · max(L·k, k²) ≤ batch_floats``.

**Solvers.** ``cholesky``: A by ``bmm``, ``torch.linalg.cholesky`` + ``cholesky_solve`` (exact;
O(L·k² + k³) per row). ``cg``: ``cg_steps`` conjugate-gradient iterations started from the
row's previous factors (Takács et al. 2011, as implicit does), with ``A·v = P v + Yᵀ(a ⊙ Y v) +
s·λ ⊙ v``: A is never formed, O(L·k) per step and row. The default is ``cg`` for implicit (each
row has few observed items next to a dense shared Gramian; warm-started, three steps track the
exact solution within a sweep or two, at a fraction of the flops) and ``cholesky`` for explicit
and Bayesian (the draws need A's Cholesky factor anyway).

**Randomness** (initial factors, Gibbs draws) comes from ``hashed_normals``: a counter-based
generator keyed by (seed, purpose, sweep, side) and indexed by the row's global id, so a row's
draw does not depend on which worker holds it: 1 and 2 workers sample the same chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from distrec import kernels
from distrec.config import NonNegative, Positive
from distrec.models.spec import ModelSpec

__all__ = [
    "ALSConfig",
    "SPECS",
    "Rows",
    "row_batches",
    "solve_rows",
    "draw_hyper",
    "draw_precision",
    "wishart",
    "hashed_normals",
]


@dataclass
class ALSConfig:
    name: Literal["als"] = "als"
    objective: Literal["explicit", "implicit"] = "explicit"
    dim: Positive[int] = 64
    l2: NonNegative[float] = 0.05  # λ on the factors
    reg_exponent: NonNegative[float] | None = None  # ν: λ·W_u^ν; None: 1 for explicit (ALS-WR's λ·n_u), 0 for implicit
    biases: bool | None = None  # user and item biases (+ the training mean); None: on for explicit, off for implicit
    bias_l2: NonNegative[float] | None = None  # λ on the biases; None: l2
    alpha: NonNegative[float] = 10.0  # implicit: confidence 1 + α·r (confidence: rating) or 1 + α (binary)
    confidence: Literal["rating", "binary"] = "binary"
    solver: Literal["cholesky", "cg"] | None = None  # None: cg for implicit, cholesky otherwise
    cg_steps: Positive[int] = 3
    init_std: NonNegative[float] = 0.01
    bayesian: bool = False  # Gibbs sampling (BPMF); train.epochs sweeps, the first burn_in discarded
    burn_in: NonNegative[int] = 10
    noise_precision: Positive[float] | None = None  # τ; None: drawn each sweep (Gamma(1, 1) prior)
    prior_beta: Positive[float] = 2.0  # β₀ of the Normal–Wishart hyper-prior
    exchange: Literal["auto", "all_gather", "all_to_all"] = "auto"  # how a half-sweep gets the other side's rows
    all_gather_max_mb: NonNegative[float] = 64.0  # auto: all-gather a table up to this size, else all-to-all of the touched rows
    batch_floats: Positive[int] = 1 << 22  # working memory of one batch of rows, in floats

    def __post_init__(self) -> None:
        if self.objective == "implicit" and self.biases:
            raise ValueError("model.biases: objective=implicit has no biases (every pair's target is 0 or 1); leave it unset")
        if self.bayesian:
            if self.objective != "explicit":
                raise ValueError("model.bayesian=true samples the explicit-rating model; set model.objective=explicit")
            if self.solver == "cg":
                raise ValueError(
                    "model.bayesian=true draws rows through their Cholesky factor; leave model.solver unset or cholesky"
                )
        elif self.l2 <= 0:
            raise ValueError(
                "model.l2 must be positive: a row with fewer ratings than dimensions has no unique solution without it"
            )

    @property
    def with_biases(self) -> bool:
        return self.objective == "explicit" if self.biases is None else self.biases

    @property
    def width(self) -> int:
        """Columns of a stored row: the factors, then the bias if any."""
        return self.dim + int(self.with_biases)

    @property
    def method(self) -> str:
        return self.solver or ("cg" if self.objective == "implicit" else "cholesky")

    @property
    def exponent(self) -> float:
        return self.reg_exponent if self.reg_exponent is not None else (1.0 if self.objective == "explicit" else 0.0)

    def reg_vector(self) -> torch.Tensor:
        """λ per stored column [width]: l2 on the factors, bias_l2 on the bias."""
        lam = torch.full((self.width,), float(self.l2))
        if self.with_biases:
            lam[-1] = float(self.l2 if self.bias_l2 is None else self.bias_l2)
        return lam


# Trained by its own loop (distrec/train/als_worker.py), no embedding tables and nothing to build:
# the loop makes the factor rows. It scores held-out ratings (explicit) or top-k (implicit) itself.
SPECS = (ModelSpec(name="als", config=ALSConfig, build=None, task="rating", loop="als"),)


@dataclass(frozen=True)
class Rows:
    """One worker's rows of one side with their ratings: row r's entries are
    ``cols[indptr[r]:indptr[r + 1]]`` (indices into the other side's working table) and ``values``."""

    indptr: torch.Tensor  # int64 [R + 1]
    cols: torch.Tensor  # int64 [nnz]
    values: torch.Tensor  # float32 [nnz]

    @classmethod
    def from_pairs(cls, row: np.ndarray, col: np.ndarray, value: np.ndarray, *, rows: int) -> Rows:
        """From pairs in any order (``row`` in [0, rows)); each row's entries sorted by ``col``."""
        order = np.lexsort((col, row))
        counts = np.bincount(row, minlength=rows)
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            indptr=torch.from_numpy(indptr),
            cols=torch.from_numpy(np.ascontiguousarray(col[order], dtype=np.int64)),
            values=torch.from_numpy(np.ascontiguousarray(value[order], dtype=np.float32)),
        )

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]


def row_batches(rows: Rows, *, width: int, budget: int) -> list[torch.Tensor]:
    """Local row ids in batches, longest rows first: a batch of B rows padded to its longest L
    holds at most ``budget`` floats of gathered features and of [k, k] systems."""
    counts = rows.counts()
    order = torch.argsort(counts, descending=True, stable=True)
    lengths = counts[order].tolist()
    out, start = [], 0
    while start < len(order):
        size = max(1, budget // max(lengths[start] * width, width * width))
        out.append(order[start : start + size])
        start += size
    return out


def _gather(cfg: ALSConfig, rows: Rows, table: torch.Tensor, sel: torch.Tensor):
    """The padded ratings of rows ``sel`` [B]: features Y [B, L, k] (biases replaced by 1), the
    ratings minus the fixed side's bias r' [B, L] and the mask [B, L]."""
    start = rows.indptr[sel]
    count = rows.indptr[sel + 1] - start
    width = int(count.max()) if len(sel) else 0
    steps = torch.arange(width)
    mask = steps < count[:, None]  # [B, L]
    pos = torch.where(mask, start[:, None] + steps, 0)  # [B, L]; L = 0 when no row has ratings
    feats = table[rows.cols[pos]]  # [B, L, k], a copy
    rating = rows.values[pos] * mask
    if cfg.with_biases:
        rating = rating - feats[..., cfg.dim] * mask
        feats[..., cfg.dim] = 1.0
    return feats, rating, mask.to(feats.dtype)


def _bmv(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.bmm(m, v.unsqueeze(-1)).squeeze(-1)


def solve_rows(
    cfg: ALSConfig,
    rows: Rows,
    table: torch.Tensor,
    factors: torch.Tensor,
    *,
    batches: list[torch.Tensor],
    scale: torch.Tensor,
    mean: float = 0.0,
    shared: torch.Tensor | None = None,
    shared_rhs: torch.Tensor | None = None,
    precision: float = 1.0,
    noise: torch.Tensor | None = None,
    native: bool = True,
) -> float:
    """Solve (or, with ``noise``, draw) every row of ``factors`` [R, k] in place from the fixed
    side's working ``table`` [M, k]; ``scale`` [R] is s_u, ``shared`` [k, k] P, ``shared_rhs``
    [k] p, ``precision`` τ, ``noise`` [R, k] standard normals (Bayesian). Returns the data term
    at the new rows: Σ (r − r̂)² over the ratings (explicit, Bayesian), or the implicit loss's
    observed part Σ c(1 − s)² − s² plus Σ_u x_uᵀ P x_u (the unobserved pairs, P = YᵀY).

    Implicit CG runs in distrec's C++ kernel (kernels/ials_cg_cpu.cpp, the same iteration row by
    row) when it is built and ``native``; the batched torch ops below otherwise."""
    lam = cfg.reg_vector()
    implicit = cfg.objective == "implicit"
    if native and implicit and cfg.method == "cg" and shared is not None and kernels.load():
        observed = torch.ops.distrec.ials_cg(rows.indptr, rows.cols, rows.values, cfg.alpha, cfg.confidence == "rating",
                                             table.contiguous(), shared.contiguous(), scale.float().contiguous(), lam,
                                             factors, cfg.cg_steps)  # fmt: skip
        return observed + float((shared * (factors.T @ factors)).sum())
    total = 0.0
    for sel in batches:
        feats, rating, mask = _gather(cfg, rows, table, sel)
        if implicit:
            extra = cfg.alpha * (rating if cfg.confidence == "rating" else mask) * mask  # c − 1 [B, L]
            a, t = extra, (1.0 + extra) * mask
        else:
            a, t = precision * mask, precision * (rating - mean * mask)
        diag = scale[sel, None] * lam  # [B, k]
        rhs = _bmv(feats.mT, t)  # [B, k]
        if shared_rhs is not None:
            rhs = rhs + shared_rhs
        if cfg.method == "cholesky":
            system = torch.bmm(feats.mT * a[:, None, :], feats)  # [B, k, k]
            if shared is not None:
                system += shared
            system.diagonal(dim1=-2, dim2=-1).add_(diag)
            chol = torch.linalg.cholesky(system)
            x = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
            if noise is not None:
                x += torch.linalg.solve_triangular(chol.mT, noise[sel].unsqueeze(-1), upper=True).squeeze(-1)
        else:
            x = _conjugate_gradient(feats, a, shared, diag, rhs, factors[sel], cfg.cg_steps)
        factors[sel] = x
        score = _bmv(feats, x)  # [B, L]
        if implicit:
            c = 1.0 + a
            total += float((mask * (c * (1.0 - score).square() - score.square())).sum())
            if shared is not None:
                total += float(((x @ shared) * x).sum())
        else:
            total += float((mask * (rating - mean - score).square()).sum())
    return total


def _conjugate_gradient(feats, a, shared, diag, rhs, x, steps: int) -> torch.Tensor:
    """``steps`` CG iterations on every row's system at once, from ``x`` [B, k] (implicit's
    ``_least_squares_cg``, batched); A·v never forms A."""

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = _bmv(feats.mT, a * _bmv(feats, v)) + diag * v
        return out + v @ shared if shared is not None else out

    x = x.clone()
    r = rhs - apply(x)
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        ap = apply(p)
        pap = (p * ap).sum(1)
        step = torch.where(pap > 0, rs / pap.clamp_min(1e-30), 0.0)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = (r * r).sum(1)
        p = r + torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), 0.0)[:, None] * p
        rs = rs_new
    return x


# -- Bayesian: hyper-parameter and precision draws ------------------------------------------------
def wishart(scale: np.ndarray, df: float, rng: np.random.Generator) -> np.ndarray:
    """A draw from Wishart(scale [k, k], df) by Bartlett's decomposition (float64)."""
    k = len(scale)
    chol = np.linalg.cholesky(scale)
    bart = np.zeros((k, k))
    bart[np.diag_indices(k)] = np.sqrt(rng.chisquare(df - np.arange(k)))
    bart[np.tril_indices(k, -1)] = rng.standard_normal(k * (k - 1) // 2)
    la = chol @ bart
    return la @ la.T


def draw_hyper(
    count: float, total: np.ndarray, outer: np.ndarray, *, beta0: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(μ [k], Λ [k, k]) from the Normal–Wishart posterior given a side's rows through their
    sums: ``count`` rows, ``total`` = Σ x [k], ``outer`` = Σ x xᵀ [k, k] (float64); μ₀ = 0,
    W₀ = I, ν₀ = k (Salakhutdinov & Mnih 2008, eq. 14)."""
    k = len(total)
    mean = total / max(count, 1.0)
    spread = outer - count * np.outer(mean, mean)  # N·S
    beta = beta0 + count
    w_inv = np.eye(k) + spread + (beta0 * count / beta) * np.outer(mean, mean)
    w = np.linalg.inv(w_inv)
    precision = wishart((w + w.T) / 2, k + count, rng)
    chol = np.linalg.cholesky(beta * precision)  # μ ~ N(μ*, (βΛ)⁻¹)
    mu = count * mean / beta + np.linalg.solve(chol.T, rng.standard_normal(k))
    return mu, precision


def draw_precision(sse: float, count: float, rng: np.random.Generator, *, a0: float = 1.0, b0: float = 1.0) -> float:
    """τ from Gamma(a0 + N/2, rate b0 + SSE/2): the noise precision's posterior given the residuals."""
    return float(rng.gamma(a0 + count / 2.0, 1.0 / (b0 + sse / 2.0)))


# -- counter-based normals ---------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wraps modulo 2⁶⁴)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_normals(rows: np.ndarray, width: int, key: tuple[int, ...]) -> torch.Tensor:
    """Standard normals float32 [len(rows), width], a pure function of ``key`` (e.g. seed,
    purpose, sweep, side), the global row id and the column (splitmix64 + Box–Muller)."""
    salt = np.zeros(1, dtype=np.uint64)
    for part in key:
        salt = _mix(salt ^ (np.array([part], dtype=np.uint64) + _GOLDEN))
    pairs = (width + 1) // 2
    counter = np.asarray(rows, dtype=np.uint64)[:, None] * np.uint64(2 * pairs) + np.arange(2 * pairs, dtype=np.uint64)
    bits = _mix(salt + counter * _GOLDEN)
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53  # (0, 1)
    radius = np.sqrt(-2.0 * np.log(uniform[:, 0::2]))
    angle = 2.0 * math.pi * uniform[:, 1::2]
    normals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=2).reshape(len(rows), 2 * pairs)
    return torch.from_numpy(normals[:, :width].astype(np.float32))
