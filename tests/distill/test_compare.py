"""jobs/distill.py --compare on tiny data: a distill run per budget, ∞-AE and EASE on each
sampler's users and on all of them, the table, the flat metrics and the figures."""

from __future__ import annotations

import json

from distrec.distill.compare import METRICS, SAMPLERS
from jobs.distill import main
from tests.helpers import check_report, tiny_synthetic, training_seed


def test_compare_budgets(tmp_path, capsys):
    data, out = str(tmp_path / "data"), tmp_path / "out"
    tiny_synthetic(data, users=90, items=60, ratings=2500, split="user-ratio:0.8/0.1/0.1")
    args = [
        f"data.path={data}",
        f"output_dir={out}",
        "compare.budgets=[6,12]",
        "compare.ease.lambdas=[1,10]",
        "samples_per_user=10",
        "tau=1.0",
        "lr=0.1",
        "steps=4",
        "validate_every=2",
        "batch_users=32",
        "eval.ks=[10,20]",
        "eval.auc_negatives=0",
        "select=hr@20",
        "model.lambdas=[0.1,1,5]",
        f"seed={training_seed()}",
    ]
    assert main(["--quiet", "--compare", *args]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads(printed[-1])
    assert metrics == json.loads((out / "metrics.json").read_text())
    rows = json.loads((out / "compare.json").read_text())
    assert {(r["sampler"], r["budget"], r["model"]) for r in rows} == (
        {(s, n, m) for s in SAMPLERS for n in (6, 12) for m in ("infae", "ease")} | {("full", 90, "infae"), ("full", 90, "ease")}
    )
    for r in rows:
        assert all(0 <= r[m] <= 1 or m == "psp@10" for m in METRICS) and r["lambda"] is not None
        tag = "full" if r["sampler"] == "full" else f"{r['sampler']}_{r['budget']}"
        assert metrics[f"{tag}_{r['model']}_test_ndcg@10"] == r["ndcg@10"]
    distilled = json.loads((out / "budget-12" / "metrics.json").read_text())
    row = next(r for r in rows if (r["sampler"], r["budget"], r["model"]) == ("distilled", 12, "infae"))
    assert row["ndcg@10"] == distilled["test_ndcg@10"]  # the same ∞-AE on the same users as the distill run's own
    assert any(line.startswith("| infae | 12 |") for line in printed) and any(line.startswith("| ease | 6 |") for line in printed)
    check_report(str(out), ["compare-infae.png", "compare-ease.png"])
