"""The per-worker loop for models trained on the dense item × user rating matrix (GLocal-K):

    this worker's item rows → model (DDP when num_workers > 1) → resume?
    → epochs (pre-train, then fine-tune: L-BFGS iterations, validate, checkpoint + report)
    → test → metrics.json

Such a model has no embedding tables, so it does not fit the TorchRec loop (worker.py): its batch
is a block of whole item rows. Items are split into contiguous ranges, one per worker; a worker
holds its rows of the training matrix [items, users] densely (plus ``gk_size // 2`` neighbour
rows on each side, which the global kernel's convolution reads) and the val/test ratings of its
items. The parameters are replicated and DDP sums the gradients, so every worker takes the same
L-BFGS steps. As in the authors' code (SciPy's L-BFGS-B called once per epoch), each epoch starts
a fresh L-BFGS with ``model.pretrain_iters``/``finetune_iters`` iterations; there is no optimizer
state to checkpoint. The schedule is fixed (no early stopping): ``model.pretrain_epochs``
pre-training epochs, then ``train.epochs − pretrain_epochs`` fine-tuning epochs.

A dense model (its spec's ``loop`` is "dense": GLocal-K) is built through its spec and provides
``forward(rows, first_item=, stage=, group=)`` over its item rows, ``data_loss``, ``regularizer``
and ``kernel_zero_fraction``; its config's ``gk_size`` (the halo), ``pretrain_epochs``,
``pretrain_iters``, ``finetune_iters`` and ``history_size`` shape the loop.

It runs inside Ray Train workers (distrec/train/worker.py's ``worker`` picks it for dense models)
and, for tests, in plain gloo processes. Device: ``model.device`` (auto: the worker's GPU when
``ray.use_gpu`` gave it one), resolved once; the model is initialised on the CPU from the seed
(the same weights on any device) and moved there with the worker's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from distrec.config import to_yaml
from distrec.console import progress_bar
from distrec.data.dataset import InteractionDataset, Interactions
from distrec.data.partition import Partition
from distrec.device import resolve_device
from distrec.eval.rating import RatingAccumulator
from distrec.models.registry import model_spec
from distrec.models.spec import ModelContext
from distrec.resources import Stopwatch
from distrec.runtime.checkpoint import load_model_checkpoint, save_model_checkpoint
from distrec.runtime.epochs import Resumable, finish_run, log_epoch, open_tracker
from distrec.runtime.session import Session
from distrec.storage import join, write_text
from distrec.tracking import Tracker
from distrec.train.config import TrainConfig

__all__ = ["ItemRows", "item_rows", "wrap", "objective", "train_dense_worker"]


@dataclass
class ItemRows:
    """One worker's block of the rating matrix: items ``[first, first + count)``."""

    first: int
    count: int
    padded: torch.Tensor  # [count + 2·halo, users]: training ratings (0 = unrated), halo rows around
    halo: int
    held_out: dict[str, Interactions]  # val/test ratings of these items

    @property
    def rows(self) -> torch.Tensor:
        return self.padded[self.halo : self.halo + self.count]  # [count, users]


def item_rows(
    dataset: InteractionDataset, split: str, *, rank: int, world: int, halo: int, device: torch.device | str = "cpu"
) -> ItemRows:
    """This worker's contiguous share of the items (an ``item_range`` partition), the training
    matrix densely with ``halo`` rows on each side (zeros beyond the matrix), on ``device``. Every
    worker reads the (sparse) training part and keeps its rows: the model needs each of its
    items' full row over users."""
    partition = Partition("item_range", rank=rank, world=world)
    first, stop = partition.items(dataset.num_items)
    train = partition.read(dataset, split=split, parts=["train"], halo=halo)
    padded = torch.zeros(stop - first + 2 * halo, dataset.num_users)  # [count + 2·halo, U]
    padded[torch.from_numpy(train.item - first + halo), torch.from_numpy(train.user)] = torch.from_numpy(train.rating)
    held_out = {part: partition.read(dataset, split=split, parts=[part]) for part in ("val", "test")}
    return ItemRows(first=first, count=stop - first, padded=padded.to(device), halo=halo, held_out=held_out)


def _stage(cfg: TrainConfig, epoch: int) -> str:
    return "pretrain" if epoch < cfg.model.pretrain_epochs else "finetune"


def wrap(model: torch.nn.Module) -> tuple[dict[str, torch.nn.Module], dist.ProcessGroup | None]:
    """The model for each stage (DDP when there are several workers; pre-training leaves the
    global kernel's parameters unused) and the process group of the global kernel's all-reduce."""
    if dist.get_world_size() == 1:
        return {"pretrain": model, "finetune": model}, None
    device = next(model.parameters()).device
    ids = [device] if device.type == "cuda" else None
    nets = {
        stage: DistributedDataParallel(model, device_ids=ids, find_unused_parameters=stage == "pretrain")
        for stage in ("pretrain", "finetune")
    }
    return nets, dist.new_group(backend="gloo" if device.type == "cpu" else "nccl")


def objective(
    net: torch.nn.Module, model: torch.nn.Module, data: ItemRows, *, stage: str, group: dist.ProcessGroup | None
) -> torch.Tensor:
    """The full objective ½ Σ_observed (r − r̂)² + regularizer over every worker's items, the
    same number on every worker; leaves its gradient in ``.grad``. DDP averages gradients over
    workers, so each worker's data term is scaled by the number of workers."""
    data_loss = model.data_loss(net(data.padded, first_item=data.first, stage=stage, group=group), data.rows)
    reg = model.regularizer()
    (dist.get_world_size() * data_loss + reg).backward()
    total = data_loss.detach().clone()
    dist.all_reduce(total)
    return total + reg.detach()


def train_dense_worker(cfg: TrainConfig, session: Session) -> dict[str, Any]:
    """One worker's whole run; returns the final metrics (identical on every worker)."""
    with open_tracker(cfg) as tracker:
        return _train_dense(cfg, session, tracker)


def _train_dense(cfg: TrainConfig, session: Session, tracker: Tracker) -> dict[str, Any]:
    clock = Stopwatch()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.model.device, allow_gpu=cfg.ray.use_gpu)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.early_stopping_metric:
        raise ValueError(f"train.early_stopping_metric: {cfg.model.name} trains a fixed schedule; leave it unset")

    # -- data: this worker's item rows ----------------------------------------------------
    dataset = cfg.data.open()
    split = dataset.resolve_split(cfg.data.split)
    data = item_rows(dataset, split, rank=rank, world=world, halo=cfg.model.gk_size // 2, device=device)
    rating = dataset.meta["rating"]
    clip = (float(rating["min"]), float(rating["max"]))
    num_train = (data.rows > 0).sum().double()
    dist.all_reduce(num_train)

    # -- model: replicated; DDP sums the gradients of the workers' rows ------------------
    context = ModelContext(
        num_users=dataset.num_users, num_items=dataset.num_items, global_mean=0.0, seed=cfg.train.seed
    )  # predicts ratings as they are
    model = model_spec(cfg.model).build(cfg.model, context, device)
    nets, pool_group = wrap(model)
    if rank == 0:
        ranges = [Partition("item_range", rank=r, world=world).items(dataset.num_items) for r in range(world)]
        shares = ", ".join(f"rank {r}: items [{first}, {stop})" for r, (first, stop) in enumerate(ranges))
        plan = f"{cfg.model.name}: data parallel (DDP) over item rows on {device.type}, {world} worker(s): {shares}"
        print(plan, flush=True)
        write_text(join(cfg.output_dir, "plan.txt"), plan)
        write_text(join(cfg.output_dir, "config.yaml"), to_yaml(cfg))

    def predict(stage: str) -> torch.Tensor:
        return nets[stage](data.padded, first_item=data.first, stage=stage, group=pool_group)  # [count, U]

    def evaluate(pred: torch.Tensor, part: str) -> dict[str, float]:
        acc = RatingAccumulator(device)
        held = data.held_out[part]
        if len(held):
            item, user = torch.from_numpy(held.item - data.first).to(device), torch.from_numpy(held.user).to(device)
            acc.add(pred[item, user].clamp(*clip), torch.from_numpy(held.rating).to(device), torch.ones(len(held), device=device))
        return acc.result(part)

    # -- resume ---------------------------------------------------------------------------
    run = Resumable(
        session,
        save=lambda directory, state: save_model_checkpoint(directory, model=model, progress=state),
        load=lambda directory: load_model_checkpoint(directory, model=model),
        resized="item rows shared out anew",
    )
    state = run.resume(lambda: {"epoch": 0, "history": [], "resumes": 0})

    # -- epochs ---------------------------------------------------------------------------
    for epoch in run.epochs(cfg.train.epochs):
        stage = _stage(cfg, epoch)
        iters = cfg.model.pretrain_iters if stage == "pretrain" else cfg.model.finetune_iters
        params = [p for n, p in model.named_parameters() if stage == "finetune" or not n.startswith("conv_kernel")]
        # max_eval as SciPy's maxfun: the iterations, not the function evaluations, are the budget
        opt = torch.optim.LBFGS(
            params, max_iter=iters, max_eval=15_000, history_size=cfg.model.history_size, line_search_fn="strong_wolfe"
        )
        epoch_clock = Stopwatch()
        with progress_bar(total=None, desc=f"{stage} epoch {epoch + 1}", unit="evals", enabled=rank == 0) as bar:

            def closure() -> torch.Tensor:  # called by this epoch's opt.step only: its opt and stage are current
                opt.zero_grad(set_to_none=True)  # noqa: B023
                bar.update(1)
                return objective(nets[stage], model, data, stage=stage, group=pool_group)  # noqa: B023

            opt.step(closure)
        with torch.no_grad():
            pred = predict(stage)
            objective_now = model.data_loss(pred, data.rows)
            dist.all_reduce(objective_now)
            objective_now += model.regularizer()
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "stage": stage,
            "train_loss": float(objective_now) / float(num_train),
            "epoch_s": epoch_clock.seconds(),
        }
        metrics.update(evaluate(pred, "val"))
        metrics.update({f"kernel_zero_frac_{k}": v for k, v in model.kernel_zero_fraction().items()})
        run.end_epoch(metrics)
        log_epoch(metrics, cfg.train.epochs, tracker)

    # -- test ------------------------------------------------------------------------------
    final: dict[str, Any] = {
        "epochs": state["epoch"],
        "resumes": state["resumes"],
        "resizes": state.get("resizes", 0),
        **(state["history"][-1] if state["history"] else {}),
    }
    final.pop("epoch", None)
    with torch.no_grad():
        final.update(evaluate(predict(_stage(cfg, state["epoch"] - 1)), "test"))
    noise_floor = dataset.meta.get("noise_floor_rmse")
    return finish_run(
        final, state["history"], output_dir=cfg.output_dir, clock=clock, tracker=tracker, noise_floor_rmse=noise_floor
    )
