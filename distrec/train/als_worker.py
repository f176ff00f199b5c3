"""The per-worker loop of ``model.name: als`` (ALS-WR, iALS, Bayesian MF by Gibbs sampling):

    data (als_data.py: ratings by user owner and by item owner, exchanges planned) → factors
    → resume? → sweeps (fetch item rows, solve users; fetch user rows, solve items; score
    validation; checkpoint + report; early stop) → best sweep → test → export → metrics.json

A sweep is this loop's epoch: ``train.epochs`` sweeps, ``epoch`` in the reports and
``history.json``, so early stopping, Tune's schedulers and the run report work unchanged. The
math is distrec/models/als.py's; nothing here loops over rows.

**Bayesian.** Every sweep draws a sample; those after ``model.burn_in`` are kept. Validation
and test predictions are summed over the kept samples and scored as their mean (the posterior
predictive mean; during burn-in, the current sample's). The exported tables reproduce those
means exactly: a row's vector is its kept samples' factors side by side, each scaled by 1/√S,
so ``p_u · q_i`` is the mean of the S samples' dot products; its bias is the mean bias.

It runs inside Ray Train workers (distrec/train/worker.py picks it for models whose spec's
``loop`` is "als") and, for tests, in plain gloo processes; it resumes, checkpoints and reports
through the resumable epoch loop of distrec/runtime/epochs.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distrec.config import to_yaml
from distrec.data.dataset import InteractionDataset
from distrec.eval.ranking import evaluate_ranking
from distrec.eval.rating import RatingAccumulator
from distrec.models.als import ALSConfig, draw_hyper, draw_precision, hashed_normals, solve_rows
from distrec.resources import Stopwatch
from distrec.runtime.checkpoint import load_worker_checkpoint, save_worker_checkpoint
from distrec.runtime.epochs import Resumable, early_stop, finish_run, log_epoch, open_tracker
from distrec.runtime.session import Session
from distrec.storage import join, write_text
from distrec.tracking import Tracker
from distrec.train.als_data import ALSData, Side, gather_all, read_als_data
from distrec.train.config import TrainConfig
from distrec.train.export import ROWS_PER_PART, export_rows

__all__ = ["train_als_worker", "initial_factors", "State"]

_INIT, _GIBBS, _HYPER, _PRECISION = 1, 2, 3, 4  # what a seeded draw is for
_CODE = {"user": 0, "item": 1}


@dataclass
class State:
    """This worker's rows and, for the Bayesian model, what it keeps of the chain."""

    user: torch.Tensor  # [R_u, k]
    item: torch.Tensor  # [R_i, k]
    precision: float  # τ (Bayesian)
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # part → Σ over kept samples of the predictions
    samples: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {"user": [], "item": []})  # kept rows (for export)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"user": self.user, "item": self.item, **{f"sum/{p}": s for p, s in self.sums.items()}}
        out.update({f"samples/{side}": torch.stack(rows) for side, rows in self.samples.items() if rows})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], precision: float) -> State:
        return cls(
            user=tensors["user"],
            item=tensors["item"],
            precision=precision,
            sums={k.removeprefix("sum/"): v for k, v in tensors.items() if k.startswith("sum/")},
            samples={side: list(tensors[f"samples/{side}"]) if f"samples/{side}" in tensors else [] for side in ("user", "item")},
        )


def train_als_worker(cfg: TrainConfig, session: Session) -> dict[str, Any]:
    """One worker's whole run; returns the final metrics (identical on every worker)."""
    with open_tracker(cfg) as tracker:
        return _train_als(cfg, session, tracker)


def _train_als(cfg: TrainConfig, session: Session, tracker: Tracker) -> dict[str, Any]:
    clock = Stopwatch()
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    rank = dist.get_rank()
    watch = cfg.train.early_stopping_metric
    if cfg.ray.use_gpu:
        raise ValueError("ray.use_gpu=true: model als runs its solves on CPU workers; set ray.use_gpu=false")
    if m.bayesian and watch:
        raise ValueError(
            "train.early_stopping_metric: model.bayesian=true averages all kept samples; "
            "choose train.epochs and model.burn_in instead"
        )

    # -- data: ratings by user and by item owner; the exchanges of rows ------------------------
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    read = Stopwatch()
    data = read_als_data(dataset, split, m)
    read_s = read.seconds()
    rating = dataset.meta["rating"]
    clip = (float(rating["min"]), float(rating["max"]))
    state = State(
        user=initial_factors(cfg, "user", data.users.ids),
        item=initial_factors(cfg, "item", data.items.ids),
        precision=m.noise_precision or 1.0 / data.variance,
    )
    if rank == 0:
        plan = _plan(cfg, data)
        print(plan, flush=True)
        write_text(join(cfg.output_dir, "plan.txt"), plan)
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))

    # -- resume ---------------------------------------------------------------------------------
    best: dict[str, torch.Tensor] | None = None

    def save(directory: str, progress: dict[str, Any]) -> None:
        extra = {f"best/{side}": rows for side, rows in (best or {}).items()}
        save_worker_checkpoint(directory, tensors={**state.tensors(), **extra}, progress=progress)

    def load(directory: str) -> dict[str, Any]:
        nonlocal state, best
        tensors, progress = load_worker_checkpoint(directory)
        state = State.from_tensors(tensors, progress["precision"])
        best = {side: tensors[f"best/{side}"] for side in ("user", "item")} if "best/user" in tensors else None
        return progress

    run = Resumable(session, save=save, load=load, describe=lambda progress: f"sweep {progress['epoch']}")
    progress = run.resume(lambda: {"epoch": 0, "history": [], "best": None, "best_epoch": None, "bad_epochs": 0, "resumes": 0})

    # -- sweeps ---------------------------------------------------------------------------------
    items = data.users.exchange.fetch(state.item)  # the item rows this worker's users need
    for epoch in run.epochs(cfg.train.epochs):
        timer = Stopwatch()
        metrics: dict[str, Any] = {"epoch": epoch + 1, **_sweep(cfg, data, state, items, epoch + 1)}
        items = data.users.exchange.fetch(state.item)
        metrics["sweep_s"] = timer.seconds()  # the solves and exchanges alone; epoch_s adds validation
        kept = _kept(m, epoch + 1)
        if kept:
            _keep_sample(cfg, data, state, items)
        metrics.update(_evaluate(cfg, data, state, items, "val", clip=clip, kept=kept))
        metrics["epoch_s"] = timer.seconds()
        improved, stop = early_stop(cfg.train, metrics, progress, epoch)
        if improved:
            best = {"user": state.user.clone(), "item": state.item.clone()} if cfg.train.restore_best else None
        progress["precision"] = state.precision
        run.end_epoch(metrics)
        log_epoch(metrics, cfg.train.epochs, tracker)
        if stop:
            if rank == 0:
                print(f"early stopping: {watch} has not improved for {cfg.train.patience} sweep(s)", flush=True)
            break

    # -- best sweep, test, export -----------------------------------------------------------------
    restored = bool(watch and cfg.train.restore_best and best is not None and progress["best_epoch"] != progress["epoch"])
    if restored:
        state.user, state.item = best["user"], best["item"]  # type: ignore[index]
        items = data.users.exchange.fetch(state.item)
    final: dict[str, Any] = {
        "epochs": progress["epoch"],
        "best_epoch": progress["best_epoch"],
        "restored_best": restored,
        "resumes": progress["resumes"],
        "read_s": read_s,
        "train_ratings": data.ratings,
        "fit_s": sum(h["sweep_s"] for h in progress["history"]),
        **(progress["history"][-1] if progress["history"] else {}),
    }
    final.pop("epoch", None)
    if m.bayesian:
        final["samples"] = _kept(m, progress["epoch"])
    final.update(_evaluate(cfg, data, state, items, "test", clip=clip, kept=_kept(m, progress["epoch"])))
    if cfg.train.export_embeddings:
        final["embeddings"] = _export(cfg, data, state, dataset, split)
    noise_floor = dataset.meta.get("noise_floor_rmse")
    return finish_run(
        final, progress["history"], output_dir=cfg.output_dir, clock=clock, tracker=tracker, noise_floor_rmse=noise_floor
    )


def _kept(m: ALSConfig, sweeps: int) -> int:
    return max(0, sweeps - m.burn_in) if m.bayesian else 0


def initial_factors(cfg: TrainConfig, side: str, ids: np.ndarray) -> torch.Tensor:
    """The starting rows [len(ids), k] of ``side`` ("user" or "item"): small random factors and
    zero biases, drawn per global id (the same whichever worker holds a row)."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    rows = m.init_std * hashed_normals(ids, m.width, (cfg.train.seed, _INIT, 0, _CODE[side]))
    if m.with_biases:
        rows[:, m.dim] = 0.0
    return rows


def _plan(cfg: TrainConfig, data: ALSData) -> str:
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    world = dist.get_world_size()
    kind = "Bayesian MF (Gibbs)" if m.bayesian else f"{m.objective} ALS, {m.method} solver"
    return (
        f"als: {kind}, {world} worker(s); users and items split by id % {world}\n"
        f"rank 0: {len(data.users.ids):,} users, {len(data.items.ids):,} items\n"
        f"user half-sweeps: item rows by {data.users.exchange.describe()}\n"
        f"item half-sweeps: user rows by {data.items.exchange.describe()}"
    )


# -- one sweep -----------------------------------------------------------------------------------
def _sweep(cfg: TrainConfig, data: ALSData, state: State, items: torch.Tensor, number: int) -> dict[str, float]:
    """Solve (draw) the users against ``items``, then the items against the users; the training
    objective at the end (explicit: RMSE and loss; implicit: loss; Bayesian: RMSE, τ)."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    _half(cfg, data, data.users, state.user, items, other=state.item, number=number, precision=state.precision)
    users = data.items.exchange.fetch(state.user)
    data_term = _half(cfg, data, data.items, state.item, users, other=state.user, number=number, precision=state.precision)
    penalty = 0.0 if m.bayesian else _penalty(m, data.users, state.user) + _penalty(m, data.items, state.item)
    totals = torch.tensor([data_term, penalty], dtype=torch.float64)
    dist.all_reduce(totals)
    data_sum, penalty = totals.tolist()
    out: dict[str, float] = {}
    if m.objective == "explicit":
        out["train_rmse"] = math.sqrt(data_sum / max(data.ratings, 1))
    if m.bayesian:
        if m.noise_precision is None:
            rng = np.random.default_rng([cfg.train.seed, _PRECISION, number])
            state.precision = float(_agreed(torch.tensor([draw_precision(data_sum, data.ratings, rng)], dtype=torch.float64))[0])
        out["noise_precision"] = state.precision
    else:
        out["train_loss"] = (data_sum + penalty) / max(data.ratings, 1)
    return out


def _half(
    cfg: TrainConfig,
    data: ALSData,
    side: Side,
    own: torch.Tensor,
    table: torch.Tensor,
    *,
    other: torch.Tensor,
    number: int,
    precision: float,
) -> float:
    """Every row of ``side`` (``own``, in place) against the other side's working ``table``;
    ``other``: the other side's own rows on this worker (for the Gramian). Returns the data term."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    shared = rhs = noise = None
    scale = torch.zeros(len(side.ids)) if m.bayesian else side.scale
    if m.objective == "implicit":
        shared = other.T @ other  # [k, k]: YᵀY over this worker's rows of the other side
        dist.all_reduce(shared)
    if m.bayesian:
        k = m.width
        stats = torch.cat(
            [torch.tensor([float(len(own))], dtype=torch.float64), own.double().sum(0), (own.double().T @ own.double()).ravel()]
        )
        dist.all_reduce(stats)
        rng = np.random.default_rng([cfg.train.seed, _HYPER, number, _CODE[side.name]])
        mu, lam = draw_hyper(
            float(stats[0]), stats[1 : k + 1].numpy(), stats[k + 1 :].reshape(k, k).numpy(), beta0=m.prior_beta, rng=rng
        )
        hyper = _agreed(torch.from_numpy(np.concatenate([mu, lam.ravel()])))
        mu_t, lam_t = hyper[:k].float(), hyper[k:].reshape(k, k).float()
        shared, rhs = lam_t, lam_t @ mu_t
        noise = hashed_normals(side.ids, k, (cfg.train.seed, _GIBBS, number, _CODE[side.name]))
    return solve_rows(m, side.rows, table, own, batches=side.batches, scale=scale, mean=data.mean, shared=shared, shared_rhs=rhs,
                      precision=precision if m.bayesian else 1.0, noise=noise)  # fmt: skip


def _agreed(values: torch.Tensor) -> torch.Tensor:
    """Rank 0's copy of a draw every worker made from the same inputs (bit-identical on all)."""
    values = values.contiguous()
    dist.broadcast(values, src=0)
    return values


def _penalty(m: ALSConfig, side: Side, own: torch.Tensor) -> float:
    """Σ_u s_u Σ_j λ_j x_uj² over this worker's rows of ``side``."""
    return float((side.scale * (own.square() @ m.reg_vector())).double().sum())


# -- scoring -------------------------------------------------------------------------------------
def _predict(cfg: TrainConfig, data: ALSData, state: State, items: torch.Tensor, part: str) -> torch.Tensor:
    """Predicted ratings of this worker's ``part`` ratings [N] (unclipped)."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    held = data.held[part]
    u, i = state.user[held.user], items[held.item]
    pred = data.mean + (u[:, : m.dim] * i[:, : m.dim]).sum(1)
    return pred + u[:, m.dim] + i[:, m.dim] if m.with_biases else pred


def _keep_sample(cfg: TrainConfig, data: ALSData, state: State, items: torch.Tensor) -> None:
    for part in ("val", "test"):
        pred = _predict(cfg, data, state, items, part).double()
        state.sums[part] = state.sums[part] + pred if part in state.sums else pred
    if cfg.train.export_embeddings:
        state.samples["user"].append(state.user.clone())
        state.samples["item"].append(state.item.clone())


def _evaluate(cfg: TrainConfig, data: ALSData, state: State, items: torch.Tensor, part: str, *, clip: tuple[float, float],
              kept: int) -> dict[str, float]:  # fmt: skip
    """Held-out metrics of ``part``: RMSE/MAE of the ratings (Bayesian: of the kept samples' mean
    prediction), or full-ranking top-k metrics (implicit). Collective."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    if m.objective == "implicit":
        world = dist.get_world_size()
        full = items if data.users.exchange.mode == "all_gather" else gather_all(state.item, data.items.total)
        q_t = full.T.contiguous()  # [k, I]
        assert data.holdout is not None
        return evaluate_ranking(
            lambda users: state.user[users // world] @ q_t,
            target=data.holdout.target(part),  # type: ignore[arg-type]
            seen=data.holdout.seen(part),  # type: ignore[arg-type]
            cfg=cfg.ranking.eval,
            prefix=part,
            propensity=data.propensity,
            users=data.users.ids,
        )
    pred = state.sums[part] / kept if kept else _predict(cfg, data, state, items, part)
    acc = RatingAccumulator()
    held = data.held[part]
    acc.add(pred.float().clamp(*clip), held.rating, torch.ones(len(held.rating)))
    return acc.result(part)


# -- export --------------------------------------------------------------------------------------
def _export(cfg: TrainConfig, data: ALSData, state: State, dataset: InteractionDataset, split: str) -> dict[str, str]:
    """``embeddings/{user,item}`` in MF's format: ``vector`` (the factors; Bayesian: the kept
    samples' side by side, × 1/√S) and, with biases, ``bias``; ``global_mean`` in the meta."""
    m: ALSConfig = cfg.model  # type: ignore[assignment]
    meta = {
        "model": m.name,
        "objective": m.objective,
        "bayesian": m.bayesian,
        "dataset": cfg.data.path,
        "split": split,
        "global_mean": data.mean,
    }
    uris = {}
    for side, own in ((data.users, state.user), (data.items, state.item)):
        stack = torch.stack(state.samples[side.name]) if state.samples[side.name] else own[None]  # [S, R, k]
        vector = stack[..., : m.dim].permute(1, 0, 2).reshape(len(own), -1) / math.sqrt(len(stack))  # [R, S·d]
        local = torch.cat([vector, stack[..., m.dim :].mean(0)], 1)  # [R, S·d (+ 1)]
        width = vector.shape[1]

        def block(start: int, stop: int, local=local, width=width) -> dict[str, np.ndarray] | None:
            rows = _assemble(local, start, stop)
            if dist.get_rank() != 0:
                return None
            return {"vector": rows[:, :width].numpy(), **({"bias": rows[:, width].numpy()} if m.with_biases else {})}

        per_part = max(1024, min(ROWS_PER_PART, (1 << 24) // local.shape[1]))
        uris[side.name] = export_rows(side.name, block, rows=side.total, output_dir=cfg.output_dir, dataset=dataset, meta=meta,
                                      rows_per_part=per_part)  # fmt: skip
    return uris


def _assemble(local: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a table split ``id % world`` on rank 0 (each worker adds its own; SUM reduce)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    block = torch.zeros(stop - start, local.shape[1])
    ids = torch.arange(start + (rank - start) % world, stop, world)
    block[ids - start] = local[ids // world]
    dist.reduce(block, dst=0)
    return block
