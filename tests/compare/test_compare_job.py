"""jobs/compare.py on a tiny dataset: closed forms and a trainer row, one table, JSON and PNG;
and the scorer that ranks by exported factor tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distrec.data.user_items import UserItems
from distrec.eval.factors import exported_scorer
from distrec.eval.ranking import RankingConfig, evaluate_ranking
from distrec.storage.embeddings import EmbeddingTable, write_embeddings
from jobs.compare import main
from tests.helpers import tiny_synthetic, training_seed


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, users=120, items=80, ratings=4000, split="user-ratio:0.8/0.1/0.1")
    return out


def _write_config(path, dataset: str, out, models: str) -> str:
    path.write_text(
        f"data: {{path: {dataset}}}\n"
        "eval: {ks: [5, 20]}\n"
        "select: ndcg@20\n"
        "columns: [ndcg@5, hr@20, auc, coverage@5]\n"
        f"models:\n{models}"
        "paper: {ease: 12.5}\n"
        f"output_dir: {out}\n"
    )
    return str(path)


def test_comparison_of_closed_forms(dataset, tmp_path, capsys):
    out = tmp_path / "report"
    config = _write_config(tmp_path / "r.yaml", dataset, out, "  - {name: poprec}\n  - {name: ease, lambdas: [10, 100]}\n")
    assert main(["--quiet", "--config", config]) == 0
    printed = capsys.readouterr().out
    table = (out / "report.md").read_text()
    assert table in printed
    assert "| model | nDCG@5 (×100) | HR@20 (×100) | AUC | Coverage@5 (×100) | paper nDCG@10 |" in table
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["poprec", "ease"]
    assert rows[0]["lambda"] is None and rows[1]["lambda"] in (10.0, 100.0)
    assert rows[1]["paper_ndcg@10"] == 12.5 and all(r["fit_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert f"| ease | {100 * rows[1]['test_ndcg@5']:.2f} |" in table
    assert (out / "ndcg_5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # plot: the first two columns
    assert "data:image/png;base64," in (out / "report.html").read_text()
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["ease_test_ndcg@5"] == rows[1]["test_ndcg@5"]


def test_unknown_column_is_a_config_error(dataset, tmp_path, capsys):
    config = _write_config(tmp_path / "r.yaml", dataset, tmp_path / "o", "  - {name: poprec}\n")
    assert main(["--quiet", "--config", config, "columns=[ndcg@7]"]) == 2
    assert "not reported metrics" in capsys.readouterr().err


def test_exported_factors_rank_by_dot_product_plus_item_bias(tmp_path):
    rng = np.random.default_rng(0)
    p, q, b = (
        rng.normal(size=(5, 3)).astype(np.float32),
        rng.normal(size=(7, 3)).astype(np.float32),
        rng.normal(size=7).astype(np.float32),
    )
    write_embeddings(
        str(tmp_path / "embeddings" / "user"), EmbeddingTable(np.arange(5), p, {"bias": np.ones(5, np.float32)}, None, {})
    )
    write_embeddings(str(tmp_path / "embeddings" / "item"), EmbeddingTable(np.arange(7), q, {"bias": b}, None, {}))
    score = exported_scorer(str(tmp_path))
    assert torch.allclose(score(torch.tensor([4, 0])), torch.from_numpy(p[[4, 0]] @ q.T + b), atol=1e-6)
    target = UserItems.from_pairs(np.array([0, 1]), np.array([int(np.argmax(p[0] @ q.T + b)), 0]), num_users=5, num_items=7)
    seen = UserItems.from_pairs(np.array([], np.int64), np.array([], np.int64), num_users=5, num_items=7)
    m = evaluate_ranking(score, target=target, seen=seen, cfg=RankingConfig(ks=[1]), prefix="test")
    assert m["test_users"] == 2 and m["test_hr@1"] >= 0.5  # user 0's positive is its top-scored item


@pytest.mark.slow
def test_row_from_the_trainer(local_ray, dataset, tmp_path, capsys):
    train_cfg = tmp_path / "mf.yaml"
    train_cfg.write_text(
        "data: {path: unused}\n"
        "model: {name: mf, dim: 8, init_std: 0.1}\n"
        f"train: {{epochs: 2, batch_size: 512, seed: {training_seed()}}}\n"
        "ray: {num_workers: 1}\n"
        "output_dir: unused\n"
    )
    out = tmp_path / "report"
    config = _write_config(tmp_path / "r.yaml", dataset, out, f"  - {{name: train, label: mf-rating, config: {train_cfg}}}\n")
    assert main(["--quiet", "--config", config]) == 0
    row = json.loads((out / "report.json").read_text())["rows"][0]
    assert row["model"] == "mf-rating" and row["epochs"] == 2  # the trainer's own metrics are kept
    assert 0 <= row["test_ndcg@5"] <= 1 and row["test_users"] == 120  # ranked from the exported factors
    assert (out / "mf-rating" / "embeddings" / "item" / "_manifest.json").exists()
