"""Top-k recommendations from a finished run (its exported embeddings), with titles; no Ray.

    python jobs/recommend.py --run runs/demo/mf --user 42 [--k 10]
    python jobs/recommend.py --run s3://bucket/runs/mf-ml25m --item 318     # similar items

Prints the user's highest-rated items and their top-k recommendations (title, year, genres,
score), or the items most similar to an item; the last line is the same as JSON. It only reads
the run (<run>/embeddings/ and the dataset its manifest names) and writes nothing, so there is
nothing to resume.
"""

from __future__ import annotations

import argparse
import sys

from distrec.cli import run_job
from distrec.recommend import load_recommender


def _table(rows: list[dict], score: str) -> str:
    lines = []
    for n, r in enumerate(rows, 1):
        genres = ", ".join(r.get("genres") or [])
        year = f" ({r['year']})" if r.get("year") else ""
        lines.append(f"{n:3d}. {r.get('title', r['item'])}{year}  [{genres}]  {score}={r[score]:.3f}  id={r['item']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a training run's output_dir (local path or URI)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="raw user id, as in the source data")
    who.add_argument("--item", help="raw item id: list the most similar items")
    parser.add_argument("--k", type=int, default=10, help="how many items: 1 to the number the user has not rated (default 10)")
    args = parser.parse_args(argv)

    def body() -> dict:
        rec = load_recommender(args.run)
        if args.item is not None:
            similar = rec.similar_items(args.item, args.k)
            print(f"items most similar to {args.item}:\n{_table(similar, 'similarity')}")
            return {"item": args.item, "similar": similar}
        liked, recs = rec.for_user(args.user, args.k)
        print(
            f"user {args.user} rated highest:\n{_table(liked, 'rating')}\n\n"
            f"top {args.k} for user {args.user}:\n{_table(recs, 'score')}"
        )
        return {"user": args.user, "rated": liked, "recommended": recs}

    return run_job(body, quiet=True)


if __name__ == "__main__":
    sys.exit(main())
