"""Prepare a dataset: raw files (or a generator) → sharded Parquet + manifest on any URI.

Local:
    python jobs/prepare.py ml-100k --source ../shared/datasets/ml-100k --out /tmp/ml100k --split u1
    python jobs/prepare.py synthetic --like ml-25m --out /tmp/syn25m
    python jobs/prepare.py --config configs/prepare/ml-1m.yaml out=s3://bucket/ml1m
On a cluster:
    ray job submit --working-dir . -- python jobs/prepare.py ml-25m --out s3://bucket/ml25m

Without --source the official release is downloaded (once, into ~/.cache/distrec).

Outputs: everything goes to --out (a directory or URI): part-*.parquet shards, ids/,
items.parquet and users.parquet where the source has them, and _manifest.json, written last.
Resuming: there is nothing to resume. An interrupted run leaves no manifest (so nothing half
written is ever read) and removes what it wrote; run the same command again. Re-running over a
finished dataset replaces it.

Checks: the "verified:" lines say what was checked (official counts where the release is
known; --no-verify skips only those). The last line printed is the dataset summary as JSON;
it is also stored in <out>/_manifest.json.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.config import load_config
from distrec.data.duplicates import DUPLICATES
from distrec.data.prepare import PrepareConfig, prepare_dataset
from distrec.data.registry import dataset_names


def describe(summary: dict) -> str:
    """What was checked, one line each, before the summary line."""
    return "\n".join(f"verified: {check}" for check in summary.get("verified", []))


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, example="rows_per_shard=1000000")
    parser.usage = "prepare.py [DATASET] [--out URI] [options] [--config FILE] [key=value ...]"
    parser.epilog = f"DATASET is one of: {', '.join(dataset_names())}"
    parser.add_argument("--out", help="output URI (directory)")
    parser.add_argument("--source", help="downloaded files: a directory, an archive, or a URI")
    parser.add_argument("--split", dest="splits", action="append", help="split spec, repeatable (see README)")
    parser.add_argument("--like", help="synthetic: the shape of ml-100k, ml-1m, ml-25m or netflix")
    parser.add_argument("--users", type=int, help="synthetic: number of users")
    parser.add_argument("--items", type=int, help="synthetic: number of items")
    parser.add_argument("--ratings", type=int, help="synthetic: number of ratings")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--rows-per-shard", dest="rows_per_shard", type=int)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="write into a non-empty --out that distrec did not write (its files are kept)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify_counts",
        action="store_false",
        default=None,
        help="accept counts that differ from the official release, a last line without "
        "its newline, and times outside the release's dates",
    )
    parser.add_argument(
        "--duplicates",
        choices=DUPLICATES,
        help="repeated (user, item) pairs: refuse (default), keep the last line, or its last line with the mean rating",
    )
    args = parser.parse_args(argv)
    args.dataset = None
    if args.overrides and "=" not in args.overrides[0]:  # the positional DATASET
        args.dataset, args.overrides = args.overrides[0], args.overrides[1:]
    sizes = {k: getattr(args, k) for k in ("users", "items", "ratings") if getattr(args, k)}
    flags = {
        k: getattr(args, k)
        for k in (
            "dataset",
            "out",
            "source",
            "splits",
            "like",
            "seed",
            "rows_per_shard",
            "verify_counts",
            "duplicates",
            "overwrite",
        )
    }
    flags = {k: v for k, v in flags.items() if v is not None} | ({"sizes": sizes} if sizes else {})
    return run_job(
        lambda: prepare_dataset(load_config(PrepareConfig, args.config, args.overrides, flags=flags)),
        quiet=args.quiet,
        describe=describe,
    )


if __name__ == "__main__":
    sys.exit(main())
