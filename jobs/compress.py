"""Compress a trained model's embedding tables with the DDS-attention compressor, on Ray Train.

Local (an embedded Ray on this machine), after jobs/train.py wrote <run>/embeddings/:
    python jobs/compress.py --config configs/compress/ml-1m.yaml source.run=runs/mf-ml-1m
    python jobs/compress.py --config configs/compress/ml-1m.yaml source.run=s3://bucket/mf-ml-1m ratios=[4]
On a cluster (see cluster/README.md):
    ray job submit --working-dir . -- python jobs/compress.py --config configs/compress/ml-1m.yaml source.run=s3://...

Reads each table's shards per worker (ranged reads; every shard verified before training),
trains one compressor per table and ratio with DDP, and writes
<output_dir>/compressed/<table>-<ratio>x/ (codes as Parquet shards, encoder.safetensors,
decoder.safetensors, manifest), metrics.json (the evaluation against PCA and scalar
quantisation, downstream RMSE, held-out users), history.json, config.yaml and
report.md/report.html (reconstruction.png, rmse_delta.png). output_dir is set in the config
(configs/compress/ml-1m.yaml: runs/compress-ml-1m; override it with output_dir=PATH_OR_URI);
checkpoints go to <ray.storage_path>/<run name> (runs/ray by default).

Resuming: re-run the same command (same output_dir): it continues from the last checkpoint.
The last line printed is metrics.json on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.compress.report import summary_table
from distrec.jobs import get_job


def main(argv: list[str] | None = None) -> int:
    args = job_parser(__doc__).parse_args(argv)
    job = get_job("compress")
    return run_job(lambda: job.run(job.load(args.config, args.overrides)), quiet=args.quiet, describe=summary_table)


if __name__ == "__main__":
    sys.exit(main())
