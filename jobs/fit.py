"""Fit a closed-form top-k model (EASE, ∞-AE, PopRec): λ chosen on validation, then test.

Local:
    python jobs/prepare.py infae --source ../shared/datasets/ml-1m-infae --out runs/data/ml-1m-infae
    python jobs/fit.py --config configs/infae/ml-1m.yaml
    python jobs/fit.py --config configs/ease/ml-1m.yaml model.lambdas=[300,500,800] output_dir=runs/ease
On a cluster (the fit runs in the job's driver process; give it a node with the memory):
    ray job submit --working-dir . -- python jobs/fit.py --config configs/ease/ml-1m.yaml data.path=s3://bucket/ml-1m-infae

Progress (each λ's validation metric) is logged; metrics are fractions (the ∞-AE paper prints
them ×100).

Outputs: output_dir, set in the config (configs/ease/ml-1m.yaml: runs/ease-ml-1m; override it
with output_dir=PATH_OR_URI), receives metrics.json (the chosen λ as "lambda"), lambdas.json,
config.yaml and report.md/report.html (test_at_k.png). Resuming: a fit keeps no checkpoints
(each λ is one solve); an interrupted fit is run again from the start with the same command,
which overwrites those files. The last line printed is metrics.json on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.jobs import get_job


def describe(metrics: dict) -> str:
    shown = [k for k in metrics if k.startswith("test_") and ("@" in k or k.endswith(("mrr", "auc")))]
    chosen = "no λ" if metrics["lambda"] is None else f"λ = {metrics['lambda']:g} (by {metrics['select']})"
    lines = [
        f"{metrics['model']}: {chosen}, fit + search + test {metrics['wall_s']:.1f} s, peak RSS {metrics['peak_rss_mb']:.0f} MiB"
    ]
    lines += [f"  {k} = {metrics[k]:.4f}  (×100: {100 * metrics[k]:.2f})" for k in shown]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)
    job = get_job("fit")
    return run_job(lambda: job.run(job.load(args.config, args.overrides)), quiet=args.quiet, describe=describe)


if __name__ == "__main__":
    sys.exit(main())
