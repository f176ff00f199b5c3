"""Benchmarks: distrec against baselines measured in the same run on the same data.

    python jobs/benchmark.py --out bench.json                   # every suite (make bench)
    python jobs/benchmark.py --suite prepare --suite storage    # some suites
    python jobs/benchmark.py --quick --out bench-quick.json     # small shapes, one repeat

Suites: prepare (ML-25M ratings.csv and Netflix text → Parquet, vs pandas.read_csv), train-mf
(biased MF with TorchRec tables on 1 and 2 Ray workers vs a plain PyTorch loop; time to a target
validation RMSE; the machine's copy bandwidth and random row rates, each MF case's updates/s as a
fraction of them; jobs/train.py on ML-1M for 10 epochs with its fixed costs by phase),
closed-form (EASE and ∞-AE fit + λ search + test on the ∞-AE paper's ML-1M
split when ../shared/datasets/ml-1m-infae exists, else synthetic ML-1M-shaped data; EASE vs
Steck's dense numpy reference), eval (full-ranking top-k users/s at ML-25M shape vs bare scoring
+ masking + top-k), storage (reading a shard set from S3 on a moto server vs local disk),
netflix-scale (one MF epoch and ten ALS sweeps on a Netflix-shaped synthetic dataset, 2
workers), distill (Distill-CF steps at the paper's settings on the same ML-1M data as
closed-form; the multi-Gumbel sampler's C++ kernel vs its torch ops), serve (jobs/serve.py's
HTTP API under a bounded load at concurrency 1, 8 and 32: exact and HNSW top-k and new users
folded in, on MF runs with ML-1M's and Netflix's item tables, vs the same calls in process; HNSW
recall@10), checkpoint (saving and restoring Netflix-shaped MF tables with row-wise Adagrad
state on gloo ranks, on the same number of workers and resharded 2 → 1 and 1 → 2; and what a
node loss costs an elastic MF run on a 3-node local cluster, from the kill to training again), peers
(distrec's ALS beside implicit, Spark MLlib and myfm on real splits from ../shared/datasets; the
peers need `make bench-peers-setup` first).

Outputs: a Markdown table (and the serve and peers suites' own tables) on the console and the
JSON results in --out (bench.json); the generated inputs stay under --work (runs/bench).
Resuming: a benchmark does not resume; a re-run reuses the inputs under --work and measures every
case again. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

from distrec.bench.fixed_costs import fixed_costs_line
from distrec.bench.harness import markdown_table, run_cases, to_json
from distrec.bench.limits import limits_table, relate_to_limits
from distrec.bench.peers import peers_table
from distrec.bench.suites import SUITES, Shapes, cases
from distrec.storage import write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=SUITES, help="run only these suites (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small shapes and one repeat (a smoke run)")
    parser.add_argument(
        "--work", default="runs/bench", help="where generated inputs are kept between runs (default: %(default)s)"
    )
    parser.add_argument("--out", default="bench.json", help="where the JSON results are written (default: %(default)s)")
    args = parser.parse_args(argv)
    suites = args.suite or list(SUITES)
    shapes = Shapes.quick() if args.quick else Shapes.full()
    start = time.perf_counter()
    print(f"building inputs under {args.work} (kept for later runs) ...", flush=True)
    todo = cases(suites, args.work, shapes)
    print(f"running {len(todo)} cases", flush=True)
    results = run_cases(todo)
    wall = time.perf_counter() - start
    relate_to_limits(results)
    tables = [markdown_table(results), limits_table(results), fixed_costs_line(results)]
    if "serve" in suites:
        from distrec.bench.serve import serve_table

        tables.append(serve_table(results))
    tables.append(peers_table(results))
    print("\n".join(t for t in tables if t))  # a suite's own table or line only where it ran
    print(f"{wall / 60:.1f} min in all, building the inputs included")
    write_text(args.out, to_json(results, {"suites": suites, "quick": args.quick, "shapes": shapes.__dict__, "wall_s": wall}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
