"""Sweep a job's hyperparameters with Ray Tune (ASHA early stopping, restorable).

Local (an embedded Ray on this machine):
    python jobs/tune.py --config configs/tune/mf-ml-1m.yaml
    python jobs/tune.py --config configs/tune/mf-ml-1m.yaml num_samples=16 scheduler.name=fifo
    python jobs/tune.py --resume runs/tune/mf-ml-1m          # continue an interrupted sweep
On a cluster (see cluster/README.md):
    ray job submit --working-dir . -- python jobs/tune.py --config configs/tune/mf-ml-1m.yaml

key=value: a key of the sweep (num_samples, output_dir, scheduler.name, ...) changes the sweep;
a key of its base job's config (data.path=..., train.epochs=...) is applied to the base in
every trial, and a line says so; any other key is refused with the nearest keys.

Outputs: output_dir, set in the sweep config (configs/tune/mf-ml-1m.yaml: runs/tune/mf-ml-1m),
receives results.parquet, leaderboard.md, best_config.yaml (train it with
`python jobs/train.py --config <output_dir>/best_config.yaml`), report.md/html and PNGs, Tune's
state in experiment/, each trial's own outputs in trials/<trial id>/ and their checkpoints in
ray/. Resuming: `python jobs/tune.py --resume <output_dir>` continues an interrupted sweep
(finished trials are kept, unfinished ones resume from their checkpoints); starting a sweep
again with --config on the same output_dir is refused. The last line printed is the summary
on one line.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.errors import UserError
from distrec.tune.overrides import load_sweep
from distrec.tune.run import resume, sweep


def describe(summary: dict) -> str:
    lines = [f"{summary['trials']} trial(s), {summary['errors']} failed"]
    lines.append(f"best {summary['metric']} = {summary['best']:.4f} (trial {summary['best_trial']}: {summary['best_params']})")
    lines += [f"leaderboard: {summary['leaderboard']}", f"best config: {summary['best_config']}", f"report: {summary['report']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--resume", metavar="PATH", help="continue the sweep in PATH (its output_dir)")
    args = parser.parse_args(argv)

    def body() -> dict:
        if args.resume:
            if args.config or args.overrides:
                raise UserError("--resume takes the sweep as it was written: drop --config and the overrides")
            return resume(args.resume)
        if not args.config:
            raise UserError("give --config configs/tune/<name>.yaml, or --resume <sweep output_dir>")
        cfg, forwarded = load_sweep(args.config, args.overrides)
        if forwarded:
            print(
                f"not keys of the sweep, so applied to its base config {cfg.base} in every trial: {' '.join(forwarded)}",
                flush=True,
            )
        return sweep(cfg)

    return run_job(body, quiet=args.quiet, describe=describe)


if __name__ == "__main__":
    sys.exit(main())
