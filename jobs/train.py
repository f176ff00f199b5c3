"""Train a model with Ray Train, its embedding tables sharded by TorchRec (GLocal-K, which has
none, splits its item rows over the workers under DDP instead).

Local (an embedded Ray on this machine):
    python jobs/train.py --config configs/mf/ml-100k.yaml
    python jobs/train.py --config configs/mf/ml-100k.yaml ray.num_workers=1 train.epochs=5
    python jobs/train.py --config configs/glocal_k/ml-100k.yaml ray.num_workers=1
On a cluster (see cluster/README.md):
    ray job submit --working-dir . -- python jobs/train.py --config configs/mf/ml-25m.yaml

Outputs: output_dir, set in the config (configs/mf/ml-100k.yaml: runs/mf-ml-100k; override it
with output_dir=PATH_OR_URI), receives metrics.json, history.json, plan.txt, config.yaml,
report.md/report.html and embeddings/<table>/. Checkpoints (one per epoch) go to
<ray.storage_path>/<run name> (runs/ray by default; the run name comes from output_dir).
Resuming: re-run the same command (same output_dir, or the same ray.name): it continues after
the last checkpointed epoch. A second run on the same output_dir while one runs is refused.

Console: on a terminal rank 0 draws one bar per epoch; in a log file, or with --quiet or
DISTREC_QUIET=1, each epoch prints one summary line and no bars. The last line printed is
metrics.json on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.jobs import get_job


def describe(metrics: dict) -> str:
    lines = [f"{k} = {v:.4f}" for k, v in metrics.items() if k.startswith("test_") and isinstance(v, float)]
    floor = metrics.get("noise_floor_rmse")
    if floor and "test_rmse" in metrics:
        lines.append(
            f"planted noise floor = {floor:.4f} (the rating noise alone: the RMSE of the true planted scores, out of reach "
            f"from finite data); test RMSE is {100 * (metrics['test_rmse'] / floor - 1):.1f}% above it"
        )
    lines += [f"embeddings: {uri}" for uri in metrics.get("embeddings", {}).values()]
    lines.append(f"report: {metrics['report']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)
    job = get_job("train")
    return run_job(lambda: job.run(job.load(args.config, args.overrides)), quiet=args.quiet, describe=describe)


if __name__ == "__main__":
    sys.exit(main())
