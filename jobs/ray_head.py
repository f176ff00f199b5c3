"""A local Ray head for submitting jobs on this machine (what `make ray-up`, `make submit` and
`make ray-down` run); see distrec/local_head.py and cluster/README.md.

    python jobs/ray_head.py up [--host 127.0.0.1] [--port 6379] [--dashboard-port 8265]
    python jobs/ray_head.py submit -- python jobs/train.py --config configs/mf/ml-100k.yaml
    python jobs/ray_head.py down

`up` refuses (exit 2) when its ports are taken or a recorded head still runs, and records the
head in --record (runs/ray-head.json); `submit` and `down` address that head and only that
head. With --host 0.0.0.0 the head listens on every interface (other machines may join); the
dashboard and Jobs API stay on 127.0.0.1 either way.
"""

from __future__ import annotations

import argparse
import sys

from distrec.cli import run_job
from distrec.errors import UserError
from distrec.local_head import LOOPBACK, start_head, stop_head, submit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", default="runs/ray-head.json", help="where the head is recorded (default runs/ray-head.json)")
    command = parser.add_subparsers(dest="command", required=True)
    up = command.add_parser("up", help="start a head and record it")
    up.add_argument("--host", default=LOOPBACK, help="the address its servers listen on (0.0.0.0: every interface)")
    up.add_argument("--port", type=int, default=6379, help="its GCS port (the address workers join)")
    up.add_argument("--dashboard-port", type=int, default=8265, help="its dashboard and Jobs API port, on 127.0.0.1")
    up.add_argument("--num-cpus", type=int, help="CPUs it offers (default: this machine's)")
    command.add_parser("down", help="stop the recorded head, nothing else")
    job = command.add_parser("submit", help="ray job submit to the recorded head: submit -- python jobs/X.py ...")
    job.add_argument("job", nargs=argparse.REMAINDER, help="the job's command line, after --")
    args = parser.parse_args(argv)

    if args.command == "submit":
        line = args.job[1:] if args.job[:1] == ["--"] else args.job
        if not line:
            parser.error("submit: give the job's command line after --")
        try:
            return submit(record=args.record, command=line)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "up":
        return run_job(
            lambda: start_head(
                record=args.record, host=args.host, port=args.port, dashboard_port=args.dashboard_port, num_cpus=args.num_cpus
            ),
            quiet=True,
            describe=lambda h: (
                f"Ray head up: address {h['address']}, Jobs API {h['dashboard']} (token auth), pid {h['pid']}, logs {h['log']}"
            ),
        )
    return run_job(
        lambda: stop_head(record=args.record),
        quiet=True,
        describe=lambda h: (
            f"stopped the Ray head pid {h['pid']} ({h['dashboard']})"
            if h
            else f"no Ray head recorded in {args.record}; nothing stopped"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
