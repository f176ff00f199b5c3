"""The checkpoint suite: saving and restoring the sharded MF tables of a Netflix-shaped run.

Biased MF at dim 64 on 480,189 users and 17,770 items (Netflix's shape) with row-wise Adagrad,
TorchRec-sharded on real gloo ranks (spawned processes, no Ray), through the project's own
checkpoint code: ``save_checkpoint`` into each worker's folder, gathered into the checkpoint by
``LocalSession.report`` (as Ray Train gathers them into the run's storage), and
``load_checkpoint`` on the same number of workers or resharded onto another
(distrec/runtime/checkpoint.py, reshard.py). The timed part is the save (write and gather) or
the load; building the sharded model, which a run does whether it resumes or not, is reported
apart (``build_s``). A case's rate is MB of checkpoint written or read per second; its peak RSS
is the largest worker's.

Each worker first runs one training step, so the Adagrad state holds real values. The saved
checkpoints the restore cases read are built once into the work directory, outside the timings.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from distrec.loopback import free_port

__all__ = ["checkpoint_input", "save_case", "restore_case"]

NETFLIX_MF = (480_189, 17_770, 64)  # users, items, dim


def _rank_main(rank: int, world: int, port: int, fn: Callable, args: tuple, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import torch
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        queue.put((rank, "ok", fn(*args)))
    except BaseException as e:
        import traceback

        queue.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        dist.destroy_process_group()


def _on_ranks(fn: Callable, world: int, *args: Any) -> list[Any]:
    """``fn(*args)`` on ``world`` gloo ranks, each a process of its own; their results in rank order."""
    import multiprocessing as mp

    # every case starts new processes; the fork server imports torch and TorchRec once for all
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchrec", "distrec.train.worker"])
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    for _ in procs:
        rank, status, value = queue.get()
        if status == "error":
            for p in procs:
                p.kill()
            raise RuntimeError(f"checkpoint benchmark, rank {rank} of {world}:\n{value}")
        results[rank] = value
    for p in procs:
        p.join()
    return [results[r] for r in range(world)]


def _sharded_mf(shape: tuple[int, int, int]):
    """This worker's sharded biased MF (row-wise Adagrad, the planner's plan) and its dense
    optimizer, after one training step on a random batch; and the seconds it took to build."""
    import torch

    from distrec.models.mf import MFConfig
    from distrec.models.registry import build_model
    from distrec.models.spec import ModelContext
    from distrec.train.config import OptimConfig, ShardingConfig
    from distrec.train.sharding import shard_model
    from distrec.train.worker import _dense_optimizer

    users, items, dim = shape
    start = time.perf_counter()
    optim = OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.1)
    model = build_model(MFConfig(dim=dim), ModelContext(num_users=users, num_items=items, global_mean=3.6), torch.device("meta"))
    dmp, _ = shard_model(model, optim=optim, sharding=ShardingConfig(), device=torch.device("cpu"), seed=0)
    opt = _dense_optimizer(dmp, optim)
    build_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(torch.distributed.get_rank())
    batch = 8192
    user, item = torch.randint(users, (batch,), generator=gen), torch.randint(items, (batch,), generator=gen)
    loss = dmp(dmp.module.features(user, item), torch.randint(1, 6, (batch,), generator=gen).float(), torch.ones(batch))
    loss.backward()  # the fused optimizer updates the rows and their accumulators
    opt.step()
    return dmp, opt, build_s


def _megabytes(folder: str) -> float:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20


def _save(shape: tuple[int, int, int], root: str) -> dict[str, float]:
    """On a rank: save the checkpoint of epoch 1 into ``root`` (a LocalSession's folder)."""
    import torch.distributed as dist

    from distrec.resources import peak_rss_mb
    from distrec.runtime.checkpoint import save_checkpoint
    from distrec.runtime.session import LocalSession

    dmp, opt, build_s = _sharded_mf(shape)
    dist.barrier()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distrec-ckpt-") as tmp:
        save_checkpoint(tmp, dmp=dmp, dense_opt=opt, progress={"epoch": 1, "history": []})
        written = time.perf_counter()
        LocalSession(root).report({"epoch": 1}, tmp)  # gathered into the checkpoint folder (ends in a barrier)
    end = time.perf_counter()
    return {"seconds": end - start, "write_s": written - start, "gather_s": end - written, "build_s": build_s,
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def _restore(shape: tuple[int, int, int], root: str) -> dict[str, Any]:
    """On a rank: build this world size's plan, then restore the latest checkpoint of ``root``."""
    import torch.distributed as dist

    from distrec.resources import peak_rss_mb
    from distrec.runtime.checkpoint import load_checkpoint
    from distrec.runtime.session import LocalSession

    dmp, opt, build_s = _sharded_mf(shape)
    with LocalSession(root).latest_checkpoint() as ckpt:
        dist.barrier()
        start = time.perf_counter()
        progress = load_checkpoint(ckpt, dmp=dmp, dense_opt=opt)
        dist.barrier()
        seconds = time.perf_counter() - start
        mb = _megabytes(ckpt)
    return {"seconds": seconds, "build_s": build_s, "mb": mb, "saved_by": progress["world"], "peak_rss_mb": peak_rss_mb()}


def _summary(ranks: list[dict[str, Any]], mb: float, **extra: Any) -> dict[str, Any]:
    """One case's figures: the slowest worker's times, the largest worker's peak RSS."""
    slowest = max(ranks, key=lambda r: r["seconds"])
    rss = max(r["peak_rss_mb"] for r in ranks)
    times = {k: v for k, v in slowest.items() if k.endswith("_s")}
    return {"seconds": slowest["seconds"], "units": mb, "mb": mb, **times, "peak_rss_mb": rss, "peak_rss_mb_per_worker": rss,
            **extra}  # fmt: skip


def checkpoint_input(work: str, shape: tuple[int, int, int], world: int) -> str:
    """The checkpoint saved by ``world`` workers that the restore cases read (built once)."""
    from distrec.bench.inputs import once

    users, items, dim = shape
    return once(f"{work}/mf-checkpoint-{users}x{items}x{dim}-{world}w", lambda tmp: _on_ranks(_save, world, shape, tmp))


def save_case(shape: tuple[int, int, int], world: int) -> dict[str, Any]:
    """Save the MF tables' checkpoint on ``world`` workers: seconds, MB written."""
    with tempfile.TemporaryDirectory(prefix="distrec-bench-ckpt-") as root:
        ranks = _on_ranks(_save, world, shape, root)
        (folder,) = os.listdir(root)
        mb = _megabytes(os.path.join(root, folder))
    return _summary(ranks, mb, workers=world)


def restore_case(checkpoint: str, shape: tuple[int, int, int], world: int) -> dict[str, Any]:
    """Restore ``checkpoint`` on ``world`` workers (resharded where it was saved by another
    number): seconds, MB read."""
    ranks = _on_ranks(_restore, world, shape, checkpoint)
    return _summary(ranks, ranks[0]["mb"], saved_by=ranks[0]["saved_by"], workers=world)
