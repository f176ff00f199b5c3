"""Plan a training run for a described GPU cluster, on any machine (no GPU needed).

TorchRec's planner places the config's embedding tables on the cluster (compute device cuda)
and estimates each GPU's memory and step time; this prints each table's sharding type and
compute kernel, each GPU's HBM and host-memory use, the planner's per-step estimate, the
epoch time at the global batch and the data side, and writes the same as JSON (--out).
The figures are the planner's model of the hardware, not measurements.

    python jobs/plan.py --config configs/mf/netflix.yaml --nodes 1 --gpus-per-node 8      # shape of data.path
    python jobs/plan.py --config configs/mf/netflix.yaml --users 1000000000 --items 100000000 \\
        --ratings 100000000000 --nodes 8 --gpus-per-node 8 --global-batch 131072 model.dim=128 --out plan.json
    python jobs/plan.py --config configs/mf/ml-25m.yaml --users 100000000 --items 10000000 --smallest

--ddr-gb is a node's host memory (shared by its GPUs); GB = 2^30 bytes, --intra/--inter-gbps in
GB/s (bytes, not bits: 12.5 is a 100 Gbit/s network). Tables that do not fit: exit 2, with what
they need and the smallest cluster of the same GPUs that fits (--smallest plans on that one).
The last line printed is the plan as JSON.
"""

from __future__ import annotations

import sys

from distrec.cli import job_parser, run_job
from distrec.config import load_config
from distrec.logs import quiet_library_logs
from distrec.plan.capacity import plan_and_write
from distrec.plan.cluster import Cluster
from distrec.plan.text import plan_text
from distrec.train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    defaults = Cluster()
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node)
    parser.add_argument("--hbm-gb", type=float, default=defaults.hbm_gb, help="HBM per GPU, GiB")
    parser.add_argument("--ddr-gb", type=float, default=defaults.ddr_gb, help="host memory per node, GiB")
    parser.add_argument("--intra-gbps", type=float, default=defaults.intra_gbps, help="GB/s between the GPUs of a node")
    parser.add_argument("--inter-gbps", type=float, default=defaults.inter_gbps, help="GB/s between nodes")
    parser.add_argument("--users", type=int, help="plan for this many users instead of data.path's")
    parser.add_argument("--items", type=int, help="plan for this many items instead of data.path's")
    parser.add_argument("--ratings", type=int, help="ratings an epoch (epoch time, shards); default data.path's")
    parser.add_argument(
        "--global-batch",
        type=int,
        help="rows a step over all GPUs (default: the config's train.global_batch_size, or train.batch_size per GPU)",
    )
    parser.add_argument("--smallest", action="store_true", help="plan on the smallest cluster of these GPUs that fits")
    parser.add_argument("--out", help="write the plan as JSON here (any URI)")
    args = parser.parse_args(argv)
    quiet_library_logs()

    def body() -> dict:
        cluster = Cluster(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            hbm_gb=args.hbm_gb,
            ddr_gb=args.ddr_gb,
            intra_gbps=args.intra_gbps,
            inter_gbps=args.inter_gbps,
        )
        cfg = load_config(TrainConfig, args.config, args.overrides)
        return plan_and_write(
            cfg,
            cluster,
            users=args.users,
            items=args.items,
            ratings=args.ratings,
            global_batch=args.global_batch,
            smallest=args.smallest,
            out=args.out,
        )

    return run_job(body, quiet=args.quiet, describe=plan_text)


if __name__ == "__main__":
    sys.exit(main())
