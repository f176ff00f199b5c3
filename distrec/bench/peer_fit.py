"""One fit of a peer library, run by the benchmark's ``peers`` suite in its own virtualenv
(``make bench-peers-setup`` makes ``.venv-peers`` from requirements/peers.txt). It never imports
distrec: the suite writes the split as arrays, runs

    .venv-peers/bin/python distrec/bench/peer_fit.py PEER IN.npz OUT.npz '{"factors": 64, ...}'

and scores what comes back with distrec's own metrics. PEER is one of

- ``implicit``: benfred's implicit ``AlternatingLeastSquares`` (CG solver) on the training pairs
  as binary feedback; OUT holds ``user_factors`` and ``item_factors``.
- ``spark``: Spark MLlib ``ALS`` (explicit ratings, regParam scaled by each row's count) on
  ``local[N]``; OUT holds ``test_pred`` (NaN where a test user or item has no training rating).
- ``myfm``: myfm's Bayesian ``MyFMRegressor`` (Gibbs sampling) on one-hot user and item columns,
  one hyper-prior group each; OUT holds ``test_pred``, the mean over the kept samples.

IN.npz holds ``{train,test}_{user,item,rating}`` and ``shape`` = (users, items). The last line
on stdout is JSON: ``fit_s`` (the library's fit call alone) and ``peak_rss_mb`` (this process,
plus the JVM's for Spark).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _implicit(data: dict, params: dict) -> tuple[dict, float, float]:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    users, items = (int(x) for x in data["shape"])
    pairs = sp.csr_matrix(
        (np.ones(len(data["train_user"]), np.float32), (data["train_user"], data["train_item"])), shape=(users, items)
    )
    model = AlternatingLeastSquares(random_state=0, **params)
    start = time.perf_counter()
    model.fit(pairs, show_progress=False)
    fit_s = time.perf_counter() - start
    return {"user_factors": np.asarray(model.user_factors), "item_factors": np.asarray(model.item_factors)}, fit_s, _rss_mb()


def _spark(data: dict, params: dict) -> tuple[dict, float, float]:
    import pandas as pd
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    cores = params.pop("cores", 2)
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.driver.memory", params.pop("driver_memory", "4g"))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:

        def frame(part: str):
            columns = {c: data[f"{part}_{c}"] for c in ("user", "item", "rating")}
            return spark.createDataFrame(pd.DataFrame({"row": np.arange(len(columns["user"])), **columns}))

        train, test = frame("train").cache(), frame("test")
        train.count()  # materialise the input before the clock starts
        als = ALS(userCol="user", itemCol="item", ratingCol="rating", coldStartStrategy="nan", seed=0, **params)
        start = time.perf_counter()
        model = als.fit(train)
        model.userFactors.count()  # the factors are computed lazily: force them inside the timing
        fit_s = time.perf_counter() - start
        pred = model.transform(test).select("row", "prediction").toPandas().sort_values("row")["prediction"].to_numpy()
        jvm = _jvm_peak_mb(spark)
    finally:
        spark.stop()
    return {"test_pred": pred.astype(np.float64)}, fit_s, _rss_mb() + jvm


def _jvm_peak_mb(spark) -> float:
    """The Spark JVM's peak resident set (VmHWM), read before it stops."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            return next(float(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    except (AttributeError, OSError, StopIteration):
        return 0.0


def _myfm(data: dict, params: dict) -> tuple[dict, float, float]:
    import myfm
    import scipy.sparse as sp

    users, items = (int(x) for x in data["shape"])

    def onehot(part: str):
        n = len(data[f"{part}_user"])
        cols = np.concatenate([data[f"{part}_user"], users + data[f"{part}_item"]])
        rows = np.concatenate([np.arange(n), np.arange(n)])
        return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, users + items))

    fit_args = {k: params.pop(k) for k in ("n_iter", "n_kept_samples") if k in params}
    model = myfm.MyFMRegressor(random_seed=0, **params)
    x_train, x_test = onehot("train"), onehot("test")
    start = time.perf_counter()
    model.fit(x_train, data["train_rating"].astype(np.float64), group_shapes=[users, items], **fit_args)
    fit_s = time.perf_counter() - start
    return {"test_pred": model.predict(x_test)}, fit_s, _rss_mb()


PEERS = {"implicit": _implicit, "spark": _spark, "myfm": _myfm}


def main(argv: list[str]) -> int:
    peer, source, target, params = argv
    data = dict(np.load(source))
    out, fit_s, rss = PEERS[peer](data, json.loads(params))
    np.savez(target, **out)
    print(json.dumps({"fit_s": fit_s, "peak_rss_mb": rss}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
