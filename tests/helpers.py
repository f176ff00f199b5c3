"""Test helpers: run a function on N real gloo ranks (separate processes), tiny datasets, the
training tests' seed and their untrained baseline."""

from __future__ import annotations

import base64
import io
import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import matplotlib.image
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from distrec import kernels
from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.loopback import free_port
from distrec.storage import StoredDirectory, filesystem, join, read_text

if TYPE_CHECKING:
    from distrec.train.config import TrainConfig

# tests of distrec's C++ kernels (distrec/kernels/), which `make setup` builds
needs_kernels = pytest.mark.skipif(
    not kernels.library_path().exists(), reason="distrec's CPU kernels are not built (make setup builds them)"
)


# Rank processes fork from a server that imported these once per test session: a spawned rank
# spends seconds of CPU importing torch and TorchRec, and the suite starts dozens of ranks.
_PRELOAD = ["torch", "torchrec", "distrec.train.worker"]


def _rank_main(rank: int, world: int, port: int, fn: Callable, args: tuple, queue, environ: dict[str, str], backend: str) -> None:
    os.environ.clear()  # the caller's environment now, not the fork server's from when it started
    os.environ.update(environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DISTREC_QUIET="1")
    from distrec.logs import quiet_library_logs

    quiet_library_logs()
    import torch

    torch.set_num_threads(1)
    if "nccl" in backend:  # one GPU per rank (tests/gpu)
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        queue.put((rank, "ok", fn(*args)))
    except BaseException:
        queue.put((rank, "error", traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, world: int, *args: Any, backend: str = "gloo") -> list[Any]:
    """``fn(*args)`` on ``world`` gloo ranks (``backend="cpu:gloo,cuda:nccl"``: rank r on GPU r);
    returns each rank's result (rank order)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    queue = ctx.SimpleQueue()
    port = free_port()
    environ = dict(os.environ)
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args, queue, environ, backend)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    for _ in procs:
        rank, status, value = queue.get()
        if status == "error":
            errors.append(f"rank {rank}:\n{value}")
        results[rank] = value
        if errors:
            break
    for p in procs:
        p.join(timeout=60 if not errors else 5)
        if p.is_alive():
            p.kill()
    if errors:
        raise AssertionError("\n".join(errors))
    return [results[r] for r in range(world)]


def _job_rank(job: str, cfg: Any, checkpoints: str) -> dict:
    from distrec.jobs import get_job
    from distrec.runtime.session import LocalSession

    session = LocalSession(checkpoints)
    result = get_job(job).worker(cfg, session)
    result["reports"] = session.reports
    return result


def job_on_ranks(job: str, cfg: Any, checkpoints: str, world: int = 2) -> dict:
    """Job ``job``'s per-worker function (distrec/jobs.py; training's: its model's loop) on
    ``world`` gloo ranks, as Ray Train runs it on its workers (a ``LocalSession`` keeps the
    checkpoints in ``checkpoints``): rank 0's result, the reports it made under ``"reports"``.
    Ray's own part is the same for every model and job and has tests of its own
    (tests/train/test_ray.py); a model's test needn't pay a Ray run's start-up."""
    return run_ranks(_job_rank, world, job, cfg, checkpoints)[0]


def training_seed(default: int = 0) -> int:
    """The seed a training test trains with: ``DISTREC_TEST_SEED`` when set (run the training
    tests at several seeds to find assertions that hold for one seed only), else ``default``."""
    value = os.environ.get("DISTREC_TEST_SEED", "").strip()
    return int(value) if value else default


def untrained_metrics(cfg: TrainConfig, parts: tuple[str, ...] = ("val",)) -> dict[str, float]:
    """On gloo ranks (those that then run ``train_worker(cfg)``, or as many as its workers): the
    metrics on ``parts`` of the model that training starts from, before its first step (same
    seed, same sharding): the baseline a training test measures the gain of training against."""
    import torch

    from distrec.data.dataset import InteractionDataset
    from distrec.models.registry import model_spec
    from distrec.train.sharding import shard_model
    from distrec.train.tasks import make_task

    torch.manual_seed(cfg.train.seed)
    dataset = InteractionDataset(cfg.data.path)
    spec = model_spec(cfg.model)
    task = make_task(cfg, spec, dataset, dataset.resolve_split(cfg.data.split))
    model = spec.build(cfg.model, task.context(), torch.device("meta"))
    dmp, _ = shard_model(model, optim=cfg.optim, sharding=cfg.sharding, device=torch.device("cpu"), seed=cfg.train.seed)
    return {k: v for part in parts for k, v in task.evaluate(dmp, dmp.module, part).items()}


def tiny_synthetic(
    out: str,
    *,
    users: int = 300,
    items: int = 200,
    ratings: int = 20_000,
    seed: int = 0,
    split: str = "random:0.8/0.1/0.1",
    rows_per_shard: int = 6000,
) -> dict:
    """A small planted dataset: several shards and row groups, so slices differ per worker."""
    return prepare_dataset(
        PrepareConfig(
            dataset="synthetic",
            out=out,
            sizes={"users": users, "items": items, "ratings": ratings},
            splits=[split],
            seed=seed,
            rows_per_shard=rows_per_shard,
            row_group_size=1000,
        )
    )


def stored_file(directory: str, name: str) -> str:
    """Where a committed directory keeps its listed file ``name`` (inside the commit's folder)."""
    return StoredDirectory(directory, verify="none").location(name)


def check_report(output_dir: str, figures: list[str]) -> str:
    """The run report in ``output_dir``: report.md beside report.html, every PNG of ``figures``
    written there, opening as an image and embedded in the HTML. Returns the HTML."""
    html = read_text(join(output_dir, "report.html"))
    assert read_text(join(output_dir, "report.md")).startswith("# ")
    fs, root = filesystem(output_dir)
    for name in figures:
        png = fs.cat_file(f"{root}/{name}")
        image = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and min(image.shape[:2]) > 50, (name, image.shape)
        assert base64.b64encode(png).decode() in html, f"{name} is not embedded in report.html"
    return html


def tiny_text_encoder(out: str) -> str:
    """A randomly initialised 1-layer BERT (hidden 16) and its word-piece tokenizer, saved as a
    Hugging Face model directory at ``out`` (nothing downloaded)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(out, exist_ok=True)
    words = "synthetic item film from and the a of drama comedy action thriller romance horror 19 20".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *(f"##{d}" for d in "0123456789"), *"0123456789."]
    with open(os.path.join(out, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=os.path.join(out, "vocab.txt")).save_pretrained(out)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out
