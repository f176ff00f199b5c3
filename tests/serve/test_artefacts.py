"""The service's library without Ray: top-k against sorting references, each model's scores
against its formula, fold-in, what the fit job exports, and every refusal (exit 2, before Ray)."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
import torch

from distrec.data.dataset import InteractionDataset
from distrec.eval.holdout import Holdout
from distrec.fit.export import WEIGHTS, WEIGHTS_FILE
from distrec.models.closed_form import EASE, EASEConfig, InfAEConfig, InfiniteAE
from distrec.recommend import load_recommender
from distrec.serve.errors import BadRequest, NotServable, UnknownId, http_status
from distrec.serve.topk import BadK, HNSWIndex, check_k, matmul_blocks, top_k
from distrec.storage import StoredDirectory, join
from distrec.storage.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from jobs.fit import main as fit
from jobs.recommend import main as recommend
from jobs.serve import main as serve_job
from tests.helpers import stored_file, tiny_synthetic


def _reference_top(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    masked = scores.astype(np.float64).copy()
    masked[exclude] = -np.inf
    return np.argsort(-masked, kind="stable")[:k]


def test_blocked_top_k_equals_a_full_sort():
    gen = torch.Generator().manual_seed(0)
    queries, items = torch.randn(5, 8, generator=gen), torch.randn(103, 8, generator=gen)
    exclude = [np.array([0, 7, 50]), np.array([], np.int64), np.arange(0, 103, 2), np.array([102]), np.arange(90)]
    for block in (7, 64, 1000):  # merging across blocks, one block
        scores, found = top_k(matmul_blocks(queries, items, block=block), k=10, exclude=exclude)
        full = (queries @ items.T).numpy()
        for row in range(5):
            want = _reference_top(full[row], exclude[row], 10)
            assert found[row].tolist() == want.tolist()
            torch.testing.assert_close(scores[row], torch.from_numpy(full[row][want]))


@pytest.mark.parametrize("k", [0, -5, 141, True, 2.5, "3", None])
def test_k_outside_one_to_the_candidates_is_refused(k):
    with pytest.raises(BadK, match="k=") as e:
        check_k(k, 140)
    assert isinstance(e.value, BadRequest)


def test_each_mistake_has_its_http_status():
    assert [http_status(e("x")) for e in (UnknownId, BadRequest, BadK, NotServable)] == [404, 422, 422, 501]


def test_k_at_the_bounds_is_accepted():
    assert check_k(1, 140) == 1 and check_k(140, 140) == 140 and check_k(np.int64(3), 140) == 3


def test_hnsw_finds_the_exact_top_k_of_an_inner_product_and_never_an_excluded_item():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(3000, 16)).astype(np.float32) * rng.uniform(0.2, 2.0, size=(3000, 1)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    exclude = [rng.choice(3000, size=int(rng.integers(0, 200)), replace=False) for _ in range(40)]
    index = HNSWIndex(items)
    found = index.search(queries, k=10, exclude=exclude)
    exact = [_reference_top(items @ q, e, 10) for q, e in zip(queries, exclude)]
    recall = np.mean([len(set(f.tolist()) & set(x.tolist())) / 10 for f, x in zip(found, exact)])  # type: ignore[union-attr]
    assert recall >= 0.95, recall  # norms vary 10x: plain L2 search would miss most of the top
    assert all(not np.isin(f, e).any() for f, e in zip(found, exclude))  # type: ignore[arg-type]
    assert index.search(queries[:1], k=10, exclude=[np.arange(2995)]) == [None]  # too few left: exact answers it


def test_mf_recommendations_follow_the_exported_model(serve_runs):
    rec = load_recommender(serve_runs["mf"])
    users, items = (read_embeddings(join(serve_runs["mf"], "embeddings", side)) for side in ("user", "item"))
    mu = items.meta["global_mean"]
    for raw in ("7", "150"):
        u = rec.catalogue.user(raw)
        seen = np.unique(rec.catalogue.rated(u)[0])
        scores = mu + users.columns["bias"][u] + items.columns["bias"] + items.vector @ users.vector[u]
        want = _reference_top(scores, seen, 10)
        liked, recs = rec.for_user(raw, 10)
        assert [r["item"] for r in recs] == [rec.catalogue.item_ids[i] for i in want]
        np.testing.assert_allclose([r["score"] for r in recs], scores[want], rtol=1e-5)
        assert [r["rating"] for r in liked] == sorted((r["rating"] for r in liked), reverse=True)
        assert all(r["title"].startswith("Synthetic item") for r in recs + liked)
        _, all_items = rec.for_user(raw, 10, exclude_seen=False)
        assert [r["item"] for r in all_items] == [rec.catalogue.item_ids[i] for i in _reference_top(scores, seen[:0], 10)]


def test_mf_with_hnsw_answers_like_exact_on_a_small_catalogue(serve_runs):
    exact, ann = load_recommender(serve_runs["mf"]), load_recommender(serve_runs["mf"], index="hnsw")
    hits = [
        len({r["item"] for r in exact.for_user(u, 10)[1]} & {r["item"] for r in ann.for_user(u, 10)[1]})
        for u in exact.catalogue.user_ids[:50]
    ]
    assert np.mean(hits) >= 9.5  # 200 items: the graph search is all but exhaustive


def _factor_run(tmp_path, data: str, model: str, *, item_bias: bool, meta: dict | None = None) -> str:
    """A run directory with user and item tables as jobs/train.py exports them (written by the
    project's writer), random factors."""
    ds = InteractionDataset(data)
    rng = np.random.default_rng(1)
    run = str(tmp_path / model)
    for side, rows in (("user", ds.num_users), ("item", ds.num_items)):
        raw = ds.read_table(f"ids/{side}.parquet").column("raw").to_numpy()
        columns = {"bias": rng.normal(size=rows).astype(np.float32)} if item_bias and side == "item" else {}
        table = EmbeddingTable(index=np.arange(rows), vector=rng.normal(size=(rows, 6)).astype(np.float32), columns=columns,
                               raw=raw, meta={"model": model, "dataset": data, **(meta or {})})  # fmt: skip
        write_embeddings(join(run, "embeddings", side), table)
    return run


def test_mf_bpr_and_two_tower_exports_are_served_and_two_tower_refuses_fold_in_with_the_reason(serve_runs, tmp_path):
    for model, bias in (("mf_bpr", True), ("two_tower", False)):
        run = _factor_run(tmp_path, serve_runs["data"], model, item_bias=bias, meta={"l2": 0.0} if model == "mf_bpr" else {})
        rec = load_recommender(run)
        users, items = (read_embeddings(join(run, "embeddings", side)) for side in ("user", "item"))
        u = rec.catalogue.user("9")
        scores = items.vector @ users.vector[u] + (items.columns["bias"] if bias else 0)
        want = _reference_top(scores, np.unique(rec.catalogue.rated(u)[0]), 5)
        recs = rec.for_user("9", 5)[1]
        assert [r["item"] for r in recs] == [rec.catalogue.item_ids[i] for i in want]
        np.testing.assert_allclose([r["score"] for r in recs], scores[want], rtol=1e-5)
        given = rec.catalogue.item_ids[:4]
        if model == "mf_bpr":
            _, new = rec.for_items(given, k=5)
            assert len(new) == 5 and not {r["item"] for r in new} & set(given)
        else:
            assert rec.info()["fold_in"] is False
            with pytest.raises(NotServable, match="history encoder"):
                rec.for_items(given, k=5)


def test_fit_exports_the_weights_that_serving_scores_with(serve_runs):
    ds = InteractionDataset(serve_runs["data"])
    holdout = Holdout.read(ds, ds.resolve_split(None))
    for name in ("ease", "infae"):
        store = StoredDirectory(join(serve_runs[name], "weights"), kind=WEIGHTS, verify="sha256")
        assert store.manifest.paths() == [WEIGHTS_FILE] and store.meta["model"] == name
        lam = json.loads(open(join(serve_runs[name], "metrics.json")).read())["lambda"]
        assert store.meta["lambda"] == lam and store.meta["dataset"] == serve_runs["data"]
        model = EASE(EASEConfig(), holdout.train) if name == "ease" else InfiniteAE(InfAEConfig(), holdout.train)
        fitted = model.solve(lam)
        rec = load_recommender(serve_runs[name])
        everything = holdout.context("test").union(holdout.target("test"))  # all the user rated
        users = np.array([rec.catalogue.user(raw) for raw in ("3", "77")])
        reference = model.scorer(fitted, everything)(torch.from_numpy(users)).numpy()  # the fit job's own scoring
        for raw, row in zip(("3", "77"), reference):
            u = rec.catalogue.user(raw)
            want = _reference_top(row, np.unique(rec.catalogue.rated(u)[0]), 10)
            recs = rec.for_user(raw, 10)[1]
            assert [r["item"] for r in recs] == [rec.catalogue.item_ids[i] for i in want]
            np.testing.assert_allclose([r["score"] for r in recs], row[want], rtol=1e-4, atol=1e-6)
            given, folded = rec.for_items([rec.catalogue.item_ids[i] for i in rec.catalogue.rated(u)[0]], k=10)
            assert folded == recs  # a new user with the same items is the same row


def test_poprec_fit_exports_nothing_and_is_refused_with_the_reason(serve_runs, tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    out = tmp_path / "poprec"
    assert (
        fit(
            [
                "--quiet",
                f"data.path={serve_runs['data']}",
                f"output_dir={out}",
                "model.name=poprec",
                "eval.ks=[5]",
                "select=ndcg@5",
            ]
        )
        == 0
    )
    assert not (out / "weights").exists()
    capsys.readouterr()
    assert serve_job(["--run", str(out)]) == 2
    assert "model poprec is not served: its ranking is the same for every user" in capsys.readouterr().err


def _no_ray(monkeypatch) -> None:
    """Refusals come before Ray: connecting fails the test."""
    import distrec.serve.launch as launch

    def connect(address):
        raise AssertionError("Ray was started for a run that should have been refused")

    monkeypatch.setattr(launch, "connect_ray", connect)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("neumf", "model neumf is not served: .*MLP tower.*missing: an export of the dense tower"),
        ("ncf", "model ncf is not served: .*missing: an export of the dense layers"),
        ("lightgcn", "model lightgcn is not served: .*missing: the propagated embeddings"),
        ("glocal_k", "written by model 'glocal_k', which this service does not know"),
    ],
)
def test_runs_the_service_cannot_score_are_refused_at_start_naming_what_is_missing(
    serve_runs, tmp_path, capsys, monkeypatch, model, reason
):
    _no_ray(monkeypatch)
    run = _factor_run(tmp_path, serve_runs["data"], model, item_bias=False)
    assert serve_job(["--run", run]) == 2
    assert re.search(reason, capsys.readouterr().err)


def test_nothing_to_serve_half_an_export_and_hnsw_for_a_closed_form_are_refused(serve_runs, tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    assert serve_job(["--run", str(tmp_path)]) == 2
    assert "nothing to serve: no embeddings/user and embeddings/item" in capsys.readouterr().err
    run = _factor_run(tmp_path, serve_runs["data"], "mf_bpr", item_bias=True)
    (tmp_path / "mf_bpr" / "embeddings" / "item" / "_manifest.json").unlink()  # an export cut short
    assert serve_job(["--run", run]) == 2
    assert "embeddings/item: no _manifest.json" in capsys.readouterr().err
    assert serve_job(["--run", serve_runs["ease"], "--index", "hnsw"]) == 2
    assert "index hnsw needs an inner-product model" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_ray_starts(serve_runs, capsys, monkeypatch):
    import socket

    _no_ray(monkeypatch)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_job(["--run", serve_runs["mf"], "--port", str(port)]) == 2
    assert f"--host 127.0.0.1 --port {port}: cannot listen there" in capsys.readouterr().err


def test_corrupt_weights_are_refused_on_load(serve_runs, tmp_path):
    import shutil

    run = tmp_path / "ease"
    shutil.copytree(serve_runs["ease"], run)
    path = pathlib.Path(stored_file(str(run / "weights"), WEIGHTS_FILE))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256 .* does not match the manifest"):
        load_recommender(str(run))


def test_unknown_ids_bad_bodies_and_bad_k_name_what_is_wrong(serve_runs):
    rec = load_recommender(serve_runs["ease"])
    with pytest.raises(UnknownId, match="user 'nobody' is not in this run's data"):
        rec.for_user("nobody")
    with pytest.raises(UnknownId, match="item 'x9' is not in this run's data"):
        rec.for_items(["1", "x9"])
    with pytest.raises(BadRequest, match="'1' is given more than once"):
        rec.for_items(["1", 1])
    with pytest.raises(BadRequest, match="2 ratings for 1 items"):
        rec.for_items(["1"], [4.0, 5.0])
    with pytest.raises(BadRequest, match="finite"):
        rec.for_items(["1"], [float("nan")])
    with pytest.raises(BadK, match=r"k=200: must be between 1 and 199"):
        rec.similar_items("1", 200)


def test_recommend_cli_serves_closed_forms_and_refuses_a_bad_k(serve_runs, capsys):
    assert recommend(["--run", serve_runs["infae"], "--user", "7", "--k", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["recommended"]) == 4 and not {r["item"] for r in summary["recommended"]} & {
        r["item"] for r in summary["rated"]
    }
    for k in ("0", "-5", "100000"):
        assert recommend(["--run", serve_runs["mf"], "--user", "7", "--k", k]) == 2
        assert f"k={k}: must be between 1 and" in capsys.readouterr().err


def test_a_run_on_s3_is_served_from_its_uri(s3_uri, tmp_path):
    """Dataset and EASE run written to S3 (moto over HTTP) serve what the same run on disk does."""
    recs = []
    for root in (s3_uri, str(tmp_path)):
        tiny_synthetic(f"{root}/data", users=80, items=60, ratings=1500, split="user-ratio:0.8/0.1/0.1")
        assert fit(["--quiet", f"data.path={root}/data", f"output_dir={root}/ease", "model.name=ease", "model.lambdas=[50]",
                    "eval.ks=[5]", "select=ndcg@5"]) == 0  # fmt: skip
        rec = load_recommender(f"{root}/ease")
        assert rec.spec.dataset == f"{root}/data"
        recs.append((rec.for_user("3", 5), rec.similar_items("2", 3)))
    assert recs[0] == recs[1]
