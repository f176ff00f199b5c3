"""A local Ray head for submitting jobs on this machine (what `make ray-up`, `make submit` and
`make ray-down` run), or a local cluster: that head plus worker nodes (`make cluster-local`,
`make cluster-local-down`); see distrec/local_head.py and cluster/README.md.

    python jobs/ray_head.py up [--host 127.0.0.1] [--port 6379] [--dashboard-port 8265]
    python jobs/ray_head.py up --nodes 3 --node-cpus 1 --num-cpus 0    # head + 2 worker nodes on 127.0.0.1
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
    up.add_argument(
        "--nodes", type=int, default=1, help="nodes in all: more than 1 adds worker nodes on 127.0.0.1 (a local cluster)"
    )
    up.add_argument("--node-cpus", type=int, default=1, help="CPUs each worker node offers (default 1)")
    command.add_parser("down", help="stop the recorded head (and its worker nodes), nothing else")
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
        if args.nodes < 1 or args.node_cpus < 1:
            parser.error("up: --nodes and --node-cpus must be at least 1")
        return run_job(
            lambda: start_head(
                record=args.record,
                host=args.host,
                port=args.port,
                dashboard_port=args.dashboard_port,
                num_cpus=args.num_cpus,
                nodes=args.nodes,
                node_cpus=args.node_cpus,
            ),
            quiet=True,
            describe=_describe_up,
        )
    return run_job(lambda: stop_head(record=args.record), quiet=True, describe=lambda h: _describe_down(h, args.record))


def _describe_up(head: dict) -> str:
    lines = [
        f"Ray head up: address {head['address']}, Jobs API {head['dashboard']} (token auth), "
        f"pid {head['pid']}, logs {head['log']}"
    ]
    lines += [
        f"  worker node {w['resource']}: {w['num_cpus']} CPU(s), node id {w['node_id'][:12]}, pid {w['pid']}, logs {w['log']}"
        for w in head.get("workers", [])
    ]
    return "\n".join(lines)


def _describe_down(head: dict, record: str) -> str:
    if not head:
        return f"no Ray head recorded in {record}; nothing stopped"
    workers = f" and its {len(head['workers'])} worker node(s)" if head.get("workers") else ""
    return f"stopped the Ray head pid {head['pid']} ({head['dashboard']}){workers}"


if __name__ == "__main__":
    sys.exit(main())
