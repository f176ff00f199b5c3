"""Fit or train every model a comparison lists on one dataset; write a table, JSON and bar charts.

Local:
    python jobs/prepare.py infae --source ../shared/datasets/ml-1m-infae --out runs/data/ml-1m-infae
    python jobs/compare.py --config configs/compare/ml-1m-infae.yaml
On a cluster (closed forms fit in the driver; train entries run on the cluster's workers):
    ray job submit --working-dir . -- python jobs/compare.py --config configs/compare/ml-1m-infae.yaml

Writes <output_dir>/report.md (the table, also printed) and report.html (with the plots, one
<metric>.png per plotted metric), report.json (every row's metrics, fit time, peak RSS),
config.yaml and metrics.json (flat: <model>_test_<metric>,
<model>_fit_s, wall_s); the last line printed is metrics.json on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.config import load_config
from distrec.compare.config import CompareConfig
from distrec.compare.run import run_compare
from distrec.storage import read_text


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)
    return run_job(
        lambda: run_compare(load_config(CompareConfig, args.config, args.overrides)),
        quiet=args.quiet,
        describe=lambda summary: read_text(summary["report"]),
    )


if __name__ == "__main__":
    sys.exit(main())
