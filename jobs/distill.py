"""Distill-CF: learn `budget` synthetic users that ∞-AE trains on as well as on all users.

Local:
    python jobs/prepare.py infae --source ../shared/datasets/ml-1m-infae --out runs/data/ml-1m-infae
    python jobs/distill.py --config configs/distill/ml-1m.yaml
    python jobs/distill.py --config configs/distill/ml-1m.yaml steps=150 batch_users=2048 output_dir=runs/distill-short
Real users from object storage, on Ray Train workers (gradients averaged over them):
    ray job submit --working-dir . -- python jobs/distill.py --config configs/distill/ml-1m.yaml \
        data.path=s3://bucket/ml-1m-infae output_dir=s3://bucket/distill-ml-1m ray.num_workers=2

Budget comparison (the paper's figure): a distill run per compare.budgets, then ∞-AE and EASE
trained on the distilled, random, head (most active) and all users:
    python jobs/distill.py --config configs/distill/ml-1m.yaml --compare output_dir=runs/distill-compare
It writes <output_dir>/budget-<n>/ (each run), compare.json, metrics.json and report.md/html
(the table; compare-infae.png, compare-ease.png: metric vs users, log x).

A bar counts the steps (on a terminal); each validation (λ search) is logged.

Outputs: output_dir, set in the config (configs/distill/ml-1m.yaml: runs/distill-ml-1m;
override it with output_dir=PATH_OR_URI), receives users/ (the synthetic users: Parquet user,
item, weight + _manifest.json), metrics.json (∞-AE on the best synthetic set: λ on validation,
then test; metrics are fractions), curve.json, config.yaml and report.md/report.html
(validation.png). Resuming: re-run the same command; it continues after the last checkpoint
(every checkpoint_every steps), kept in <output_dir>/checkpoints/, or with ray.num_workers
set in the Ray run's checkpoints under ray.storage_path. With --compare each budget's run
resumes the same way. The last line printed is metrics.json on one line.
"""

from __future__ import annotations

import json
import posixpath
import sys

from distrec.cli import job_parser, run_job
from distrec.distill.compare import compare_budgets, markdown_table
from distrec.jobs import get_job
from distrec.storage import join, read_text


def describe(metrics: dict) -> str:
    key = next(k for k in metrics if k.startswith("initial_val_"))
    lines = [
        f"distill-cf: {metrics['budget']} synthetic users, best at step {metrics['best_step']} of {metrics['steps']}; "
        f"{key[8:]} {metrics[key]:.4f} (initial real users) → {metrics[key[8:]]:.4f}",
        f"  ∞-AE on them (λ = {metrics['lambda']:g}): "
        + ", ".join(f"{k} = {100 * metrics[k]:.2f}" for k in metrics if k.startswith("test_") and k[5:7] in ("hr", "nd")),
        f"  wall {metrics['wall_s']:.1f} s, peak RSS {metrics['peak_rss_mb']:.0f} MiB",
    ]
    return "\n".join(lines)


def describe_comparison(metrics: dict) -> str:
    return markdown_table(json.loads(read_text(join(posixpath.dirname(metrics["report"]), "compare.json"))))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--compare", action="store_true", help="distil every compare.budgets and compare samplers")
    args = parser.parse_args(argv)
    job = get_job("distill")
    if args.compare:
        return run_job(
            lambda: compare_budgets(job.load(args.config, args.overrides)), quiet=args.quiet, describe=describe_comparison
        )
    return run_job(lambda: job.run(job.load(args.config, args.overrides)), quiet=args.quiet, describe=describe)


if __name__ == "__main__":
    sys.exit(main())
