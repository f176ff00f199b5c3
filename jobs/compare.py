"""Fit or train every model a comparison lists on one dataset; write a table, JSON and bar charts.

Local:
    python jobs/prepare.py infae --source ../shared/datasets/ml-1m-infae --out runs/data/ml-1m-infae
    python jobs/compare.py --config configs/compare/ml-1m-infae.yaml
On a cluster (closed forms fit in the driver; train entries run on the cluster's workers):
    ray job submit --working-dir . -- python jobs/compare.py --config configs/compare/ml-1m-infae.yaml

Outputs: output_dir, set in the config (configs/compare/ml-1m-infae.yaml:
runs/compare/ml-1m-infae; override it with output_dir=PATH_OR_URI), receives report.md (the
table, also printed) and report.html (with the plots, one <metric>.png per plotted metric),
report.json (every row's metrics, fit time, peak RSS), config.yaml and metrics.json (flat:
<model>_test_<metric>, <model>_fit_s, wall_s); a train entry's run goes to <output_dir>/<label>/
(its checkpoints to <output_dir>/ray/).
Resuming: a comparison does not resume; every run fits and trains each listed model afresh
(train entries get a new Ray run name) and rewrites the report. The last line printed is
metrics.json on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.compare.config import CompareConfig
from distrec.compare.run import run_compare
from distrec.config import load_config
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
