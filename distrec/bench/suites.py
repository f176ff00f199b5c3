"""The benchmark suites: each function is one measured run (in its own process, see harness.py).

Inputs are generated once into the work directory (outside the timings) and reused (inputs.py).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from distrec.bench.als import als_scale
from distrec.bench.fixed_costs import FIXED_COSTS, mf_fixed_costs
from distrec.bench.harness import Case
from distrec.bench.inputs import closed_form_dataset, ml25m_source, netflix_source, once, synthetic_dataset
from distrec.bench.limits import LIMITS, machine_limits
from distrec.bench.peers import peer_cases, shared_dataset

__all__ = ["Shapes", "cases"]


@dataclass(frozen=True)
class Shapes:
    """Sizes of the benchmark inputs: the real ones, or ``quick`` ones for a smoke run."""

    ml25m_rows: int
    netflix_rows: int
    synthetic_like: str  # train-mf data
    netflix_like: dict[str, int] | None  # netflix-scale data (None: the full Netflix shape)
    storage_mb: int
    repeats: int
    epochs_to_target: int
    closed_form_like: str = "ml-1m"  # closed-form data when the real ML-1M split is not at hand
    eval_like: str = "ml-25m"  # eval data (its test users are ranked against every item)
    eval_users: int = 20_000  # test users ranked per eval run (a seeded sample)
    serve_like: str | None = "ml-1m"  # serve: the MF run's data (None: not run), and one with Netflix's item table:
    serve_netflix: tuple[int, int, int] = (50_000, 17_770, 5_000_000)  # users, items, ratings
    serve_requests: int = 2000  # per endpoint and concurrency
    checkpoint_mf: tuple[int, int, int] = (480_189, 17_770, 64)  # checkpoint: MF users, items, dim (Netflix's)
    node_loss_like: str | None = None  # checkpoint: the elastic MF run that loses a node (None: not run)
    node_loss_epochs: int = 8
    fixed_costs_like: str = "ml-1m"  # train-mf's fixed-costs run: the real ML-1M 90/10 split when at hand, else synthetic
    fixed_costs_epochs: int = 10

    @classmethod
    def full(cls) -> Shapes:
        return cls(25_000_095, 100_480_507, "ml-25m", None, 1024, 3, 3, node_loss_like="ml-1m")

    @classmethod
    def quick(cls) -> Shapes:
        return cls(200_000, 400_000, "ml-100k", {"users": 5000, "items": 800, "ratings": 200_000}, 16, 1, 2,
                   closed_form_like="ml-100k", eval_like="ml-100k", eval_users=500,
                   serve_like="ml-100k", serve_netflix=(2000, 3000, 60_000), serve_requests=100,
                   checkpoint_mf=(5000, 800, 16), fixed_costs_like="ml-100k", fixed_costs_epochs=2)  # fmt: skip


# -- prepare ------------------------------------------------------------------------------------
def prepare_distrec(dataset: str, source: str, split: str) -> dict[str, Any]:
    from distrec.console import set_quiet
    from distrec.data.prepare import PrepareConfig, prepare_dataset
    from distrec.data.registry import dataset_names

    set_quiet(True)
    dataset_names()  # import every parser before the clock starts
    size = sum(os.path.getsize(os.path.join(source, f)) for f in os.listdir(source))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = prepare_dataset(
            PrepareConfig(dataset=dataset, out=f"{out}/d", source=source, splits=[split], verify_counts=False)
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "units": size / 2**20, "ratings": summary["ratings"]}


def read_csv_pandas(source: str, kind: str) -> dict[str, Any]:
    """The baseline: pandas.read_csv of the same file (chunked for Netflix's 2 GB of text)."""
    import pandas as pd

    path = os.path.join(source, os.listdir(source)[0])
    start = time.perf_counter()
    if kind == "movielens":
        rows = len(pd.read_csv(path))
    else:
        rows = sum(len(c) for c in pd.read_csv(path, names=["customer", "rating", "date"], chunksize=5_000_000))
    return {"seconds": time.perf_counter() - start, "units": os.path.getsize(path) / 2**20, "rows": rows}


def prepare_pandas(source: str) -> dict[str, Any]:
    """The same work as ``prepare ml-25m --split user-ratio`` written with pandas: read, dense
    ids, a per-user random 80/10/10 split (at least one test rating per user), snappy Parquet."""
    import numpy as np
    import pandas as pd

    path = os.path.join(source, "ratings.csv")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        df = pd.read_csv(path)
        df["user"] = pd.factorize(df.pop("userId"))[0]
        df["item"] = pd.factorize(df.pop("movieId"))[0]
        draw = pd.Series(np.random.default_rng(0).random(len(df)))
        rank = draw.groupby(df["user"].to_numpy()).rank(method="first").to_numpy() - 1
        count = df.groupby("user")["user"].transform("size").to_numpy()
        n_test = np.maximum(1, np.floor(count * 0.1 + 0.5))
        n_val = np.minimum(np.floor(count * 0.1 + 0.5), np.maximum(count - n_test - 1, 0))
        n_test = np.minimum(n_test, np.maximum(count - 1, 0))
        df["split_user_ratio"] = np.select([rank >= count - n_test, rank >= count - n_test - n_val], [2, 1], 0).astype("int8")
        df.to_parquet(f"{out}/ratings.parquet", compression="snappy", row_group_size=65536, index=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "units": os.path.getsize(path) / 2**20, "rows": len(df)}


# -- train-mf -----------------------------------------------------------------------------------
BATCH = 8192  # rows per training step in every train-mf case and the baseline
SGD_STEP = 0.005  # SGD's learning rate per row of the batch (the loss is a batch mean); 0.05 diverged
SPARSE_LR = {"rowwise_adagrad": 0.1, "sgd": SGD_STEP * BATCH}


def _train_config(data: str, out: str, workers: int, epochs: int, early: bool, sparse: str = "rowwise_adagrad"):
    """Biased MF, dim 64, biases in the factor rows for SGD (as in the baseline); the cores are
    split evenly between the workers (torch threads follow)."""
    from distrec.config import from_dict
    from distrec.jobs import get_job

    cpus = max(1, (os.cpu_count() or 1) // workers)
    return from_dict(
        get_job("train").config,
        {
            "data": {"path": data},
            "model": {"name": "mf", "dim": 64, "init_std": 0.1, "l2": 0.04, "bias_in_factor_row": sparse == "sgd"},
            "train": {"epochs": epochs, "batch_size": BATCH, "eval_batch_size": 65536,
                      "export_embeddings": False, **({"early_stopping_metric": "val_rmse"} if early else {})},
            "optim": {"sparse": sparse, "sparse_lr": SPARSE_LR[sparse]},
            "ray": {"num_workers": workers, "cpus_per_worker": cpus, "storage_path": f"{out}/ray", "max_failures": 0},
            "output_dir": f"{out}/run",
        },
    )  # fmt: skip


def _worker_rss(metrics: dict[str, Any]) -> dict[str, float]:
    """A Ray case's peak RSS: the table's column is the larger of this and the driver's."""
    return {"peak_rss_mb": metrics["peak_rss_mb_per_worker"], "peak_rss_mb_per_worker": metrics["peak_rss_mb_per_worker"]}


def train_distrec(data: str, workers: int, sparse: str = "rowwise_adagrad") -> dict[str, Any]:
    """One epoch of biased MF with TorchRec tables on ``workers`` Ray Train workers (dim 64),
    fused ``sparse`` optimizer (rowwise_adagrad: the product's default; sgd: the baseline's)."""
    from distrec.console import set_quiet
    from distrec.jobs import get_job

    set_quiet(True)
    with tempfile.TemporaryDirectory() as out:
        metrics = get_job("train").run(_train_config(data, out, workers, epochs=1, early=False, sparse=sparse))
    rows = metrics["train_samples_per_s"] * metrics["epoch_s"]
    return {
        "seconds": metrics["epoch_s"],
        "units": rows,
        **_worker_rss(metrics),
        "val_rmse": metrics["val_rmse"],
    }


def train_plain_torch(data: str, batch_size: int = BATCH, optimizer: str = "sgd") -> dict[str, Any]:
    """The baseline: one process on every core, ``nn.Embedding(sparse=True)`` with sparse-gradient
    ``torch.optim.SGD`` (or ``Adagrad``, element-wise, beside TorchRec's row-wise one) on the same
    rows and batch size."""
    import numpy as np
    import torch

    from distrec.data.dataset import InteractionDataset

    torch.set_num_threads(os.cpu_count() or 1)
    ds = InteractionDataset(data)
    train = ds.read(split=None, parts=["train"])
    dim = 64
    user = torch.nn.Embedding(ds.num_users, dim + 1, sparse=True)
    item = torch.nn.Embedding(ds.num_items, dim + 1, sparse=True)
    for table in (user, item):
        torch.nn.init.normal_(table.weight, std=0.1)
    mean = float(train.rating.mean())
    params = [user.weight, item.weight]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=SGD_STEP * batch_size)
    else:
        opt = torch.optim.Adagrad(params, lr=SPARSE_LR["rowwise_adagrad"])
    u, i, r = (torch.from_numpy(x) for x in (train.user, train.item, train.rating))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(u)))
    start = time.perf_counter()
    for s in range(0, len(u), batch_size):
        idx = order[s : s + batch_size]
        eu, ei = user(u[idx]), item(i[idx])
        pred = mean + eu[:, dim] + ei[:, dim] + (eu[:, :dim] * ei[:, :dim]).sum(1)
        loss = (pred - r[idx]).square().mean() + 0.04 * (eu.square().sum(1) + ei.square().sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"seconds": time.perf_counter() - start, "units": len(u), "last_batch_loss": loss.item()}


def time_to_target(data: str, workers: int, epochs: int) -> dict[str, Any]:
    """Epochs until validation RMSE is within 5% of the planted noise floor, and their time."""
    from distrec.console import set_quiet
    from distrec.data.dataset import InteractionDataset
    from distrec.jobs import get_job

    set_quiet(True)
    target = 1.05 * InteractionDataset(data).meta["noise_floor_rmse"]
    with tempfile.TemporaryDirectory() as out:
        metrics = get_job("train").run(_train_config(data, out, workers, epochs=epochs, early=True))
        history = json.load(open(f"{out}/run/history.json"))
    elapsed, reached = 0.0, None
    for h in history:
        elapsed += h["epoch_s"]
        if h["val_rmse"] <= target:
            reached = h["epoch"]
            break
    return {"seconds": elapsed if reached else math.inf, "units": 1, "target_val_rmse": target, "epochs": reached,
            "best_val_rmse": min(h["val_rmse"] for h in history), **_worker_rss(metrics)}  # fmt: skip


# -- closed-form --------------------------------------------------------------------------------
def fit_distrec(data: str, model: str) -> dict[str, Any]:
    """``jobs/fit.py --config configs/<model>/ml-1m.yaml`` on ``data``: build, λ search on
    validation, test; the rate counts the λ values tried."""
    from distrec.console import set_quiet
    from distrec.jobs import get_job

    set_quiet(True)
    job = get_job("fit")
    with tempfile.TemporaryDirectory() as out:
        m = job.run(job.load(f"configs/{model}/ml-1m.yaml", [f"data.path={data}", f"output_dir={out}", "export_weights=false"]))
    lambdas = len(job.load(f"configs/{model}/ml-1m.yaml").model.lambdas)
    return {"seconds": m["wall_s"], "units": lambdas, "lambda": m["lambda"], "test_ndcg@10": m["test_ndcg@10"],
            "build_s": m["build_s"], "search_s": m["search_s"], "test_s": m["test_s"]}  # fmt: skip


def ease_reference(data: str) -> dict[str, Any]:
    """The baseline: Steck's reference EASE (dense numpy: ``P = inv(G + λI)``, ``B = P / -diag(P)``,
    scores ``X·B`` from dense rows) over the same λ grid and evaluation as ``fit_distrec``."""
    import numpy as np
    import torch

    from distrec.config import load_config
    from distrec.console import set_quiet
    from distrec.data.dataset import InteractionDataset
    from distrec.eval.holdout import Holdout
    from distrec.eval.ranking import evaluate_ranking
    from distrec.fit.config import FitConfig

    set_quiet(True)
    cfg = load_config(FitConfig, "configs/ease/ml-1m.yaml", [f"data.path={data}", "output_dir=unused"])
    dataset = InteractionDataset(data)
    holdout = Holdout.read(dataset, dataset.resolve_split(None))
    start = time.perf_counter()
    x = holdout.train.dense(np.arange(holdout.train.num_users)).numpy()
    gram = (x.T @ x).astype(np.float64)

    def solve(lam: float) -> torch.Tensor:
        p = np.linalg.inv(gram + lam * np.eye(len(gram)))
        b = p / -np.diag(p)
        np.fill_diagonal(b, 0.0)
        return torch.from_numpy(b.astype(np.float32))

    def evaluate(weights: torch.Tensor, part: str) -> dict[str, float]:
        context = holdout.context(part)  # type: ignore[arg-type]
        return evaluate_ranking(lambda u: context.dense(u.numpy()) @ weights, target=holdout.target(part),  # type: ignore[arg-type]
                                seen=holdout.seen(part), cfg=cfg.eval, prefix=part, propensity=holdout.propensity())  # type: ignore[arg-type]  # fmt: skip

    val = {lam: evaluate(solve(lam), "val")[f"val_{cfg.select}"] for lam in cfg.model.lambdas}
    chosen = max(val, key=val.__getitem__)
    test = evaluate(solve(chosen), "test")
    return {"seconds": time.perf_counter() - start, "units": len(val), "lambda": chosen, "test_ndcg@10": test["test_ndcg@10"]}


# -- eval ---------------------------------------------------------------------------------------
def _eval_inputs(data: str, users: int):
    import numpy as np
    import torch

    from distrec.data.dataset import InteractionDataset
    from distrec.eval.holdout import Holdout

    dataset = InteractionDataset(data)
    holdout = Holdout.read(dataset, dataset.resolve_split(None))
    gen = torch.Generator().manual_seed(0)
    user_f = torch.randn(dataset.num_users, 64, generator=gen)
    item_f = torch.randn(dataset.num_items, 64, generator=gen)
    target = holdout.target("test")
    candidates = np.flatnonzero(target.counts() > 0)
    chosen = np.sort(np.random.default_rng(0).choice(candidates, size=min(users, len(candidates)), replace=False))
    return holdout, lambda u: user_f[u] @ item_f.T, target, chosen


def rank_users(data: str, users: int) -> dict[str, Any]:
    """Full-ranking top-k evaluation (every metric of the full protocol, ks 10 and 100) of
    ``users`` test users with dim-64 factors: users/s."""
    from distrec.console import set_quiet
    from distrec.eval.ranking import RankingConfig, evaluate_ranking

    set_quiet(True)
    holdout, score, target, chosen = _eval_inputs(data, users)
    start = time.perf_counter()
    m = evaluate_ranking(score, target=target, seen=holdout.seen("test"), cfg=RankingConfig(ks=[10, 100]),
                         prefix="test", propensity=holdout.propensity(), users=chosen)  # fmt: skip
    return {"seconds": time.perf_counter() - start, "units": m["test_users"], "items": target.num_items}


def topk_only(data: str, users: int) -> dict[str, Any]:
    """The baseline: the least any full-ranking evaluation does: scores, seen items masked, top-100."""
    import torch

    holdout, score, _, chosen = _eval_inputs(data, users)
    seen = holdout.seen("test")
    start = time.perf_counter()
    for s in range(0, len(chosen), 2048):
        block = chosen[s : s + 2048]
        scores = score(torch.from_numpy(block))
        rows, items = seen.block(block)
        scores[torch.from_numpy(rows), torch.from_numpy(items)] = -torch.inf
        scores.topk(100, dim=1)
    return {"seconds": time.perf_counter() - start, "units": len(chosen)}


# -- storage ------------------------------------------------------------------------------------
def _shard_set(uri: str, megabytes: int) -> None:
    import numpy as np
    import pyarrow as pa

    from distrec.storage import DirectoryWriter

    rows = megabytes * 2**20 // 16  # two float64 columns of noise: incompressible
    rng = np.random.default_rng(0)
    with DirectoryWriter(uri, kind="bench", schema_version=1) as w:
        per = 4_000_000
        for k, start in enumerate(range(0, rows, per)):
            n = min(per, rows - start)
            w.write_table(f"part-{k:05d}.parquet", pa.table({"a": rng.random(n), "b": rng.random(n)}))
        w.commit({})


def read_shards(where: str, work: str, megabytes: int) -> dict[str, Any]:
    """Read (and sha256-check) every shard of a ``megabytes`` shard set on local disk or S3 (moto over HTTP)."""
    from distrec.storage import StoredDirectory

    server = None
    if where == "s3":
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=f"http://{host}:{port}")  # fmt: skip
        boto3.client("s3").create_bucket(Bucket="distrec-bench")
        uri = "s3://distrec-bench/shards"
        _shard_set(uri, megabytes)
    else:
        uri = once(f"{work}/shards-{megabytes}mb", lambda tmp: _shard_set(tmp, megabytes))
    try:
        start = time.perf_counter()
        store = StoredDirectory(uri)
        total = sum(len(store.read_bytes(p)) for p in store.manifest.paths("part-"))
        return {"seconds": time.perf_counter() - start, "units": total / 2**20}
    finally:
        if server is not None:
            server.stop()


# -- the list -----------------------------------------------------------------------------------
SUITES = ("prepare", "train-mf", "closed-form", "eval", "storage", "netflix-scale", "distill", "serve", "checkpoint", "peers")


def cases(suites: list[str], work: str, shapes: Shapes) -> list[Case]:
    """The cases of the chosen suites; inputs are built here, before anything is timed."""
    os.makedirs(work, exist_ok=True)
    out: list[Case] = []
    r = shapes.repeats
    warm = r > 1  # a smoke run (one repeat) skips the warm-up runs of the cases below
    if "prepare" in suites:
        ml = ml25m_source(work, shapes.ml25m_rows)
        nf = netflix_source(work, shapes.netflix_rows)
        out += [
            Case("prepare", "ml25m-csv/pandas", read_csv_pandas, (ml, "movielens"), unit="MB", repeats=r),
            Case("prepare", "ml25m-csv/distrec", prepare_distrec, ("ml-25m", ml, "user-ratio"), unit="MB",
                 baseline="ml25m-csv/pandas", repeats=r),
            Case("prepare", "ml25m-csv/pandas-pipeline", prepare_pandas, (ml,), unit="MB", baseline="ml25m-csv/distrec",
                 repeats=1, warmup=False),
            Case("prepare", "netflix-text/pandas", read_csv_pandas, (nf, "netflix"), unit="MB", repeats=1, warmup=False),
            Case("prepare", "netflix-text/distrec", prepare_distrec, ("netflix", nf, "random"), unit="MB",
                 baseline="netflix-text/pandas", repeats=1, warmup=False),
        ]  # fmt: skip
    if "train-mf" in suites:
        # one Ray epoch of ML-25M is 20M samples (~1 min): warm-ups are skipped, the fused-SGD
        # case (the like-for-like comparison) runs twice and the row-wise Adagrad ones once, so
        # every suite fits in 30 minutes
        data = synthetic_dataset(work, shapes.synthetic_like)
        two = min(r, 2)
        out += [
            Case("train-mf", LIMITS, machine_limits, (data,), unit="rows", repeats=1, warmup=False),
            Case("train-mf", "plain-pytorch-sgd", train_plain_torch, (data,), unit="samples", repeats=two, warmup=False),
            Case("train-mf", "plain-pytorch-adagrad", train_plain_torch, (data, BATCH, "adagrad"), unit="samples",
                 repeats=two, warmup=False),
            Case("train-mf", "torchrec-1worker-sgd", train_distrec, (data, 1, "sgd"), unit="samples",
                 baseline="plain-pytorch-sgd", repeats=two, warmup=False),
            Case("train-mf", "torchrec-1worker-rowwise-adagrad", train_distrec, (data, 1), unit="samples",
                 baseline="plain-pytorch-adagrad", repeats=1, warmup=False),
            Case("train-mf", "torchrec-2workers-rowwise-adagrad", train_distrec, (data, 2), unit="samples",
                 baseline="plain-pytorch-adagrad", repeats=1, warmup=False),
            Case("train-mf", "time-to-target-2workers", time_to_target, (data, 2, shapes.epochs_to_target),
                 unit="runs", repeats=1, warmup=False),
        ]  # fmt: skip
        like = shapes.fixed_costs_like
        ml1m = (shared_dataset(work, "ml-1m-90-10") if like == "ml-1m" else None) or synthetic_dataset(work, like)
        out.append(Case("train-mf", FIXED_COSTS, mf_fixed_costs, (ml1m, shapes.fixed_costs_epochs), unit="runs", repeats=1,
                        warmup=False))  # fmt: skip
    if "closed-form" in suites:
        data, what = closed_form_dataset(work, shapes.closed_form_like)
        print(f"closed-form data: {what}", flush=True)
        out += [
            Case("closed-form", "ease/steck-numpy", ease_reference, (data,), unit="λ", repeats=1, warmup=False),
            Case(
                "closed-form",
                "ease/distrec",
                fit_distrec,
                (data, "ease"),
                unit="λ",
                baseline="ease/steck-numpy",
                repeats=min(r, 2),
                warmup=False,
            ),
            Case("closed-form", "infae/distrec", fit_distrec, (data, "infae"), unit="λ", repeats=min(r, 2), warmup=False),
        ]
    if "eval" in suites:
        data = synthetic_dataset(work, shapes.eval_like)
        out += [
            Case("eval", "topk-only", topk_only, (data, shapes.eval_users), unit="users", repeats=r, warmup=warm),
            Case(
                "eval",
                "full-ranking",
                rank_users,
                (data, shapes.eval_users),
                unit="users",
                baseline="topk-only",
                repeats=r,
                warmup=warm,
            ),
        ]
    if "storage" in suites:
        mb = shapes.storage_mb
        out += [
            Case("storage", "local-disk", read_shards, ("local", work, mb), unit="MB", repeats=r),
            Case(
                "storage",
                "s3-moto-http",
                read_shards,
                ("s3", work, mb),
                unit="MB",
                baseline="local-disk",
                repeats=min(r, 2),
                warmup=False,
            ),
        ]
    if "distill" in suites:  # Distill-CF steps at the paper's settings (budget 500, 200 draws, every user)
        from distrec.bench.distill import distill_steps

        data, what = closed_form_dataset(work, shapes.closed_form_like)
        print(f"distill data: {what}", flush=True)
        out += [
            Case("distill", "step-torch-ops", distill_steps, (data, 1, False), unit="steps", repeats=1, warmup=False),
            Case("distill", "step", distill_steps, (data, 3), unit="steps", baseline="step-torch-ops", repeats=1, warmup=False),
        ]
    if "serve" in suites:
        from distrec.bench import serve

        users, items, ratings = shapes.serve_netflix
        datasets = [(shapes.serve_like, synthetic_dataset(work, shapes.serve_like))] if shapes.serve_like else []
        datasets.append(("netflix-items", synthetic_dataset(work, None, {"users": users, "items": items, "ratings": ratings})))
        for name, data in datasets:
            run = once(f"{data}-mf-run", lambda tmp, data=data: serve.build_mf_run(data, tmp))
            n = shapes.serve_requests
            out += [Case("serve", f"{name}/in-process", serve.serve_in_process, (run, n), unit="requests", repeats=1,
                         warmup=False),
                    Case("serve", f"{name}/http", serve.serve_over_http, (run, n, (1, 8, 32)), unit="requests",
                         baseline=f"{name}/in-process", repeats=1, warmup=False)]  # fmt: skip
    if "checkpoint" in suites:  # the MF tables' checkpoint saved, restored, and restored resharded
        from distrec.bench import checkpoint as ck

        shape = shapes.checkpoint_mf
        saved = {w: ck.checkpoint_input(work, shape, w) for w in (1, 2)}
        out += [
            Case("checkpoint", "save-2workers", ck.save_case, (shape, 2), unit="MB", repeats=r, warmup=False),
            Case("checkpoint", "save-1worker", ck.save_case, (shape, 1), unit="MB", repeats=r, warmup=False),
            Case("checkpoint", "restore-2to2", ck.restore_case, (saved[2], shape, 2), unit="MB", repeats=r, warmup=False),
            Case("checkpoint", "restore-2to1-resharded", ck.restore_case, (saved[2], shape, 1), unit="MB",
                 baseline="restore-2to2", repeats=r, warmup=False),
            Case("checkpoint", "restore-1to2-resharded", ck.restore_case, (saved[1], shape, 2), unit="MB",
                 baseline="restore-2to2", repeats=r, warmup=False),
        ]  # fmt: skip
        if shapes.node_loss_like:  # what losing a node costs an elastic run: from the kill to training again
            from distrec.bench.elastic import node_loss_case

            data = synthetic_dataset(work, shapes.node_loss_like)
            out.append(Case("checkpoint", "node-loss-2to1", node_loss_case, (data, shapes.node_loss_epochs), unit="losses",
                            repeats=1, warmup=False))  # fmt: skip
    if "netflix-scale" in suites:
        data = synthetic_dataset(work, None if shapes.netflix_like else "netflix", shapes.netflix_like)
        out.append(Case("netflix-scale", LIMITS, machine_limits, (data,), unit="rows", repeats=1, warmup=False))
        out.append(Case("netflix-scale", "mf-epoch-2workers", train_distrec, (data, 2), unit="samples", repeats=1, warmup=False))
        out.append(Case("netflix-scale", "als-sweep-2workers", als_scale, (data, 2, 10), unit="ratings", repeats=1, warmup=False))
    if "peers" in suites:  # real data only (../shared/datasets), peers from .venv-peers: see peers.py
        out += peer_cases(work)
    return out
