"""Serve a finished run over HTTP with Ray Serve: recommendations, new users, similar items, a page.

    python jobs/serve.py --run runs/demo/mf                           # http://127.0.0.1:8000/
    python jobs/serve.py --run s3://bucket/runs/ease-ml1m --replicas 2 --port 8080
    python jobs/serve.py --run runs/mf-ml25m --index hnsw             # approximate top-k (faiss HNSW)
On a cluster (the driver stays up while the service runs; Serve's proxy binds --host on the head):
    ray job submit --working-dir . -- python jobs/serve.py --run s3://bucket/runs/mf --host 0.0.0.0

Serves mf, mf_bpr and two_tower runs (jobs/train.py's exported embeddings) and ease and infae
runs (jobs/fit.py's weights). A run with nothing servable is refused at start with the reason
(exit 2). Binds 127.0.0.1 unless --host says otherwise: the API has no authentication, and
anyone who can reach the port can read every user's history and recommendations. Ctrl-C stops
it; the last line printed is a JSON summary. The API is in distrec/serve/app.py and the README.
"""

from __future__ import annotations

import argparse
import sys

from distrec.cli import run_job
from distrec.serve.launch import serve_until_stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a training or fit run's output_dir (local path or URI)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (default: this machine only)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--index", choices=["exact", "hnsw"], default="exact", help="top-k search (default: exact)")
    parser.add_argument("--address", help="a Ray cluster to join (default: $RAY_ADDRESS, else an embedded local Ray)")
    args = parser.parse_args(argv)

    def ready(info: dict) -> None:
        print(f"serving {info['model']} from {info['run']} ({info['replicas']} replica(s), {info['index']} top-k) "
              f"at {info['url']}  (Ctrl-C stops it)", flush=True)  # fmt: skip

    def body() -> dict:
        info = serve_until_stopped(args.run, on_ready=ready, host=args.host, port=args.port, replicas=args.replicas,
                                   index=args.index, address=args.address, cpus_per_replica=args.cpus_per_replica)  # fmt: skip
        return {**info, "stopped": True}

    return run_job(body)


if __name__ == "__main__":
    sys.exit(main())
