"""Raw files (any source in the registry) → a committed, sharded interaction dataset.

One pass over the parser's chunks: ratings are checked (``checks.py``; errors name file and line), raw
ids become dense indices, and ``part-NNNNN.parquet`` shards are written as they fill, by
background threads while the next chunks are parsed. Splits the source defines itself (ML-100K
folds, the ∞-AE index, Netflix probe) arrive with the chunks, and row-wise splits (``random``, an
official split with a validation part carved out) are drawn chunk by chunk. Splits that need
every user's rows (per-user ratio, leave-last-out, temporal, a user holdout) are computed after
the last chunk, so the encoded rows (29 bytes a rating: 2.9 GB for Netflix) are held in memory
and the shards written then. Repeated (user, item) pairs are refused after the last chunk, or
resolved before the first as ``--duplicates`` says (``duplicates.py``). Id maps and metadata
follow, and the manifest last. Any error leaves no manifest, and the writer removes what it wrote.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from distrec.config import NonNegative, Positive
from distrec.console import progress_bar
from distrec.data.checks import checked
from distrec.data.duplicates import Duplicates, PairCheck, resolve_duplicates
from distrec.data.idmap import IdMap
from distrec.data.registry import DatasetSpec, Parsed, ReadOptions, get_dataset
from distrec.data.schema import KIND, SCHEMA_VERSION, RatingChunk, interaction_schema, split_column
from distrec.data.source import Source, default_cache_dir, download
from distrec.data.splits import ROW_WISE, SplitSpec, compute_split, parse_split, row_wise_split, split_counts
from distrec.errors import DataError
from distrec.resources import Stopwatch, peak_rss_mb
from distrec.storage import DirectoryWriter
from distrec.storage.commit import check_target
from distrec.storage.uri import overlaps

__all__ = ["PrepareConfig", "prepare_dataset"]

log = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    """What ``jobs/prepare.py`` does; the same fields in YAML (``--config``) or as flags."""

    dataset: str  # a registry name (see README)
    out: str  # output URI
    source: str | None = None  # path or URI of downloaded files; None = official download
    splits: list[str] = field(default_factory=list)  # empty = the dataset's default split
    like: str | None = None
    sizes: dict[str, NonNegative[float]] = field(default_factory=dict)
    seed: NonNegative[int] = 0
    rows_per_shard: Positive[int] = 4_000_000
    row_group_size: NonNegative[int] = 0  # 0 = auto: about 1/128 of the expected rows, 1024..65536
    verify_counts: bool = True
    duplicates: Duplicates = "refuse"  # repeated (user, item) pairs: refuse, keep-last or mean (duplicates.py)
    cache_dir: str | None = None
    overwrite: bool = False  # write into a non-empty directory distrec did not write (its files are kept)


def _open_source(spec: DatasetSpec, req: PrepareConfig) -> Source | None:
    if not spec.needs_source:
        if req.source:
            raise DataError(f"{spec.name}: takes no --source (it is generated)")
        return None
    if req.source:
        return Source(req.source)
    if not spec.urls:
        raise DataError(
            f"{spec.name}: there is no public download URL; obtain {spec.how_to_get or 'the files'} "
            "and pass their location with --source PATH"
        )
    cache = req.cache_dir or default_cache_dir()
    return Source([download(url, f"{cache}/{spec.name}") for url in spec.urls])


class _ShardBuffer:
    """Collects encoded rows and writes a shard each time ``rows_per_shard`` rows are in.

    Background threads write (Arrow encodes Parquet without the GIL) while the caller parses the
    next rows; at most ``WRITERS`` shards are in flight. Leaving the block waits for them, so an
    abort that follows removes them too."""

    WRITERS = 2
    PLAIN = ("user", "ts")  # many distinct values per row group: not dictionary-encoded

    def __init__(self, writer: DirectoryWriter, req: PrepareConfig) -> None:
        self.writer, self.req = writer, req
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.parts: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=self.WRITERS)
        self.writing: list[Future] = []

    def __enter__(self) -> _ShardBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            take = min(table.num_rows, self.req.rows_per_shard - self.pending_rows)
            self.pending.append(table.slice(0, take))
            self.pending_rows += take
            table = table.slice(take)
            if self.pending_rows == self.req.rows_per_shard:
                self.flush()

    def flush(self) -> None:
        if not self.pending_rows:
            return
        if len(self.writing) == self.WRITERS:
            self.writing.pop(0).result()  # a failed write raises here
        name = f"part-{len(self.parts):05d}.parquet"
        table = pa.concat_tables(self.pending)
        dictionary = [c for c in table.column_names if c not in self.PLAIN]
        self.writing.append(
            self.pool.submit(self.writer.write_table, name, table, row_group_size=self.req.row_group_size, dictionary=dictionary)
        )
        self.parts.append(name)
        self.pending, self.pending_rows = [], 0

    def close(self) -> list[str]:
        """Write what is left; the shard names, once all are written."""
        self.flush()
        while self.writing:
            self.writing.pop(0).result()
        return self.parts


def prepare_dataset(req: PrepareConfig) -> dict[str, Any]:
    """Prepare ``req.dataset`` into ``req.out``; returns the summary also stored in the manifest."""
    clock = Stopwatch()
    spec = get_dataset(req.dataset)
    specs = [parse_split(s, spec.official_splits) for s in (req.splits or [spec.default_split])]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError(f"splits {req.splits}: each split kind may be recorded once")
    official = tuple(s.name for s in specs if s.kind == "official")
    computed = [s for s in specs if s.kind != "official"]
    bases = tuple(dict.fromkeys(s.base for s in computed if s.base))  # official splits that computed ones build on
    if req.rows_per_shard <= 0 or req.row_group_size < 0:
        raise DataError("rows_per_shard must be positive and row_group_size non-negative")
    _check_out(req)

    source = _open_source(spec, req)
    options = ReadOptions(
        splits=tuple(dict.fromkeys(official + bases)),
        verify=req.verify_counts,
        duplicates=req.duplicates,
        seed=req.seed,
        like=req.like,
        sizes=req.sizes,
    )
    parsed = spec.read(source, options)
    rows = resolve_duplicates(checked(spec, parsed.chunks, verify=req.verify_counts), req.duplicates, parsed.meta)
    pairs = PairCheck()
    if not req.row_group_size:
        req.row_group_size = _auto_row_group_size(parsed.expected_rows or (spec.expected[2] if spec.expected else None))
    users, items = IdMap(), IdMap()
    stats = _Stats()
    row_wise = {s.name: (s, row_wise_split(s, req.seed)) for s in computed if s.kind in ROW_WISE}
    later = [s for s in computed if s.kind not in ROW_WISE]  # need every user's rows
    held: list[pa.Table] = []  # encoded rows, while ``later`` splits wait for the last chunk
    held_base: dict[str, list[np.ndarray]] = {s.base: [] for s in later if s.base}
    has_ts = True
    with (
        DirectoryWriter(req.out, kind=KIND, schema_version=SCHEMA_VERSION, overwrite=req.overwrite) as writer,
        _ShardBuffer(writer, req) as shards,
    ):
        with progress_bar(total=spec.expected[2] if spec.expected else None, desc=f"parse {spec.name}", unit="rows") as bar:
            for chunk in rows:
                table = _encode(chunk, users, items, official)
                pairs.add(table.column("user").to_numpy(), table.column("item").to_numpy(), chunk.where)
                for name, (s, draw) in row_wise.items():
                    codes = draw(len(chunk), _official_codes(chunk, s.base) if s.base else None)
                    stats.count_split(name, codes)
                    table = table.append_column(_split_field(name), pa.array(codes))
                has_ts &= chunk.ts is not None
                stats.add(chunk)
                if later:
                    held.append(table)
                    for name, parts in held_base.items():
                        parts.append(_official_codes(chunk, name))
                else:
                    shards.add(table)
                bar.update(len(chunk))
        pairs.check(users, items)
        counts = {"users": len(users), "items": len(items), "ratings": stats.rows}
        verified = [*parsed.checks, *_check_counts(spec, counts, req)]
        counted = dict(stats.split_counts)
        if later:
            counted |= _write_held(shards, held, held_base, later, has_ts=has_ts, seed=req.seed)
        split_meta = {s.name: {"spec": s.text, "counts": counted[s.name]} for s in specs}
        parts = shards.close()
        writer.write_table("ids/user.parquet", users.to_table())
        writer.write_table("ids/item.parquet", items.to_table())
        extra = _write_metadata(writer, parsed, users, items)
        summary = {
            "dataset": spec.name,
            "title": spec.title,
            "source": req.source or (list(spec.urls) if spec.urls else None),
            **counts,
            "density": stats.rows / max(counts["users"] * counts["items"], 1),
            "rating": stats.summary(),
            "ts": stats.ts_summary() if has_ts else None,
            "splits": split_meta,
            "default_split": specs[0].name,
            "shards": len(parts),
            "rows_per_shard": req.rows_per_shard,
            "row_group_size": req.row_group_size,
            "verified": verified,
            **extra,
            **parsed.meta,
        }
        summary["wall_s"] = round(clock.seconds(), 3)
        summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
        writer.commit(summary)
    return summary


def _check_out(req: PrepareConfig) -> None:
    """Before any download or parse: ``out`` is not the source, nor inside it, nor around it, and
    is a directory distrec may write (``check_target``)."""
    if req.source and overlaps(req.out, req.source):
        raise DataError(
            f"--out {req.out} and --source {req.source} are the same place, or one is inside the other; "
            "write the dataset to a directory of its own"
        )
    check_target(req.out, overwrite=req.overwrite)


def _auto_row_group_size(expected_rows: int | None) -> int:
    """Row groups are what workers divide among themselves (see dataset.py): small enough that
    even ML-100K gives each of many workers an even share, large enough to read efficiently."""
    if not expected_rows:
        return 65536
    return int(min(65536, max(1024, 2 ** round(math.log2(expected_rows / 128)))))


def _encode(chunk: RatingChunk, users: IdMap, items: IdMap, official: tuple[str, ...]) -> pa.Table:
    n = len(chunk)
    columns = {
        "user": pa.array(users.encode(chunk.user)),
        "item": pa.array(items.encode(chunk.item)),
        "rating": pa.array(chunk.rating.astype(np.float32, copy=False)),
        "ts": pa.array(chunk.ts.astype(np.int64, copy=False)) if chunk.ts is not None else pa.nulls(n, pa.int64()),
    }
    for name in official:
        columns[split_column(name)] = pa.array(_official_codes(chunk, name))
    return pa.table(columns, schema=interaction_schema(list(official)))


def _official_codes(chunk: RatingChunk, name: str) -> np.ndarray:
    """int8 codes [N] of the official split ``name`` for the chunk's rows."""
    if name not in chunk.splits:
        raise DataError(f"the parser did not decode the official split {name!r}")
    return chunk.splits[name].astype(np.int8, copy=False)


class _Stats:
    def __init__(self) -> None:
        self.rows = 0
        self.sum = self.sumsq = 0.0
        self.lo, self.hi = np.inf, -np.inf
        self.ts_lo, self.ts_hi = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        self.split_counts: dict[str, dict[str, int]] = {}  # per split name, its rows per part

    def add(self, chunk: RatingChunk) -> None:
        r = chunk.rating.astype(np.float64)
        self.rows += len(r)
        self.sum += float(r.sum())
        self.sumsq += float((r * r).sum())
        if len(r):
            self.lo, self.hi = min(self.lo, float(r.min())), max(self.hi, float(r.max()))
        if chunk.ts is not None and len(chunk.ts):
            self.ts_lo, self.ts_hi = min(self.ts_lo, int(chunk.ts.min())), max(self.ts_hi, int(chunk.ts.max()))
        for name, codes in chunk.splits.items():
            self.count_split(name, codes)

    def count_split(self, name: str, codes: np.ndarray) -> None:
        got = split_counts(codes)
        acc = self.split_counts.setdefault(name, {})
        for k, v in got.items():
            acc[k] = acc.get(k, 0) + v

    def summary(self) -> dict[str, float]:
        mean = self.sum / max(self.rows, 1)
        return {"min": self.lo, "max": self.hi, "mean": mean, "std": max(self.sumsq / max(self.rows, 1) - mean**2, 0.0) ** 0.5}

    def ts_summary(self) -> dict[str, int]:
        return {"min": self.ts_lo, "max": self.ts_hi}


def _check_counts(spec: DatasetSpec, counts: dict[str, int], req: PrepareConfig) -> list[str]:
    """Compare with the official release's counts where the registry knows them; says what it did."""
    if counts["ratings"] == 0:
        raise DataError(f"{spec.name}: the source holds no ratings")
    if not spec.expected:
        return []
    if not req.verify_counts:
        return ["official counts not checked (--no-verify)"]
    want = dict(zip(("users", "items", "ratings"), spec.expected))
    if counts != want:
        raise DataError(
            f"{spec.name}: parsed {counts['users']:,} users, {counts['items']:,} items, {counts['ratings']:,} ratings; "
            f"the official release has {want['users']:,}, {want['items']:,}, {want['ratings']:,}. The source is "
            "incomplete or another version; pass --no-verify to accept it as it is"
        )
    return [f"counts match the official release ({want['users']:,} users, {want['items']:,} items, {want['ratings']:,} ratings)"]


def _write_held(
    shards: _ShardBuffer,
    held: list[pa.Table],
    held_base: dict[str, list[np.ndarray]],
    later: list[SplitSpec],
    *,
    has_ts: bool,
    seed: int,
) -> dict[str, dict[str, int]]:
    """Compute the splits that need every user's rows, then write the held rows with their
    columns appended (each table let go once it is queued); returns each split's counts."""
    log.info("computing the %s split(s) over %d rows", ", ".join(s.text for s in later), sum(t.num_rows for t in held))
    user = np.concatenate([t.column("user").to_numpy() for t in held])
    ts = np.concatenate([t.column("ts").to_numpy() for t in held]) if has_ts else None
    base = {name: np.concatenate(parts) for name, parts in held_base.items()}
    codes = {s.name: compute_split(s, user, ts, seed=seed, base=base.get(s.base)) for s in later}
    del user, ts, base
    held.reverse()
    offset = 0
    with progress_bar(total=len(held), desc="write shards", unit="chunks") as bar:
        while held:
            table = held.pop()
            n = table.num_rows
            for name, c in codes.items():
                table = table.append_column(_split_field(name), pa.array(c[offset : offset + n]))
            shards.add(table)
            offset += n
            bar.update(1)
    return {name: split_counts(c) for name, c in codes.items()}


def _split_field(name: str) -> pa.Field:
    return pa.field(split_column(name), pa.int8(), nullable=False)


def _write_metadata(writer: DirectoryWriter, parsed: Parsed, users: IdMap, items: IdMap) -> dict[str, Any]:
    """``items.parquet``/``users.parquet`` keyed by dense index; entities never rated are dropped."""
    extra: dict[str, Any] = {}
    for kind, table, ids in (("items", parsed.items(), items), ("users", parsed.users(), users)):
        if table is None:
            extra[f"has_{kind}"] = False
            continue
        index = ids.lookup(table.column("raw").to_numpy(zero_copy_only=False))
        known = index >= 0
        order = np.argsort(index[known], kind="stable")
        joined = table.filter(pa.array(known)).take(pa.array(order))
        joined = joined.add_column(0, "item" if kind == "items" else "user", pa.array(index[known][order]))
        writer.write_table(f"{kind}.parquet", joined)
        extra[f"has_{kind}"] = True
        extra[f"{kind}_with_metadata"] = joined.num_rows
        extra[f"{kind}_without_metadata"] = len(ids) - joined.num_rows
    return extra
