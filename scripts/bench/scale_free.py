#!/usr/bin/env python3
"""Benchmark 2: the pass does not slow down with table size or as it advances.

(a) Our queue-mode pass over DUE due rows in a table of DUE rows vs in a table of TOTAL rows
    (default 100k vs 1M): ratio of median pass times, target <= 1.2.
(b) Within one pass over the big table: the last batch vs the first (claim transaction, and
    claim + enqueue), target <= 1.5: claimed rows leave the due range and are never rescanned.
    Single batches are noisy, so the mean of the first 5 and last 5 batches is printed too.

    python scripts/bench/scale_free.py            # 100k-row vs 1M-row table, 100k due, 3 passes each
    python scripts/bench/scale_free.py --smoke
    python scripts/bench/scale_free.py --database postgresql   # the same on PostgreSQL
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import passes  # noqa: E402
from redis import Redis  # noqa: E402


def run_table(srv: common.Servers, total: int, due: int, chunk: int, repeat: int) -> list[passes.PassResult]:
    db = srv.database
    url = db.new_database(f"bench_scale{total}")
    engine = common.sqlalchemy_engine(url)
    base = common.db_now(engine)
    seed_s = db.seed_schedules(url, total=total, due=due, base=base)
    common.log(f"seeded {total} rows ({due} due) in {seed_s:.1f}s")
    settings = common.settings_for(url, srv.redis_url, DISPATCH_CHUNK_SIZE=chunk)
    redis_conn = Redis.from_url(srv.redis_url)
    results = []
    try:
        for round_ in range(repeat):
            common.flush_redis(srv.redis_url)
            db.reset_claimed(url, total=total, due=due, base=base)
            db.warm(url)
            result = passes.ours(engine, settings, redis_conn, base)
            assert result.rows == due, result.rows
            common.log(f"table {total}: pass {round_ + 1}: {result.seconds:.2f}s")
            results.append(result)
    finally:
        redis_conn.close()
        engine.dispose()
        db.drop_database(url)
    return results


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    common.add_database_option(parser)
    args = parser.parse_args()
    if args.smoke:
        args.total, args.due, args.chunk = 4_000, 1_000, 100
    repeat = args.repeat or (1 if args.smoke else 3)

    with common.servers(args.database) as srv:
        versions = srv.versions()
        small = run_table(srv, args.due, args.due, args.chunk, repeat)
        big = run_table(srv, args.total, args.due, args.chunk, repeat)

    small_s = common.median([r.seconds for r in small])
    big_s = common.median([r.seconds for r in big])
    table_ratio = big_s / small_s
    # batch figures from the median pass over the big table
    mid = sorted(big, key=lambda r: r.seconds)[len(big) // 2]
    n = min(5, len(mid.claim_s))
    first_claim, last_claim = mid.claim_s[0], mid.claim_s[-1]
    first_batch, last_batch = mid.batch_s[0], mid.batch_s[-1]
    claim5 = statistics.mean(mid.claim_s[-n:]) / statistics.mean(mid.claim_s[:n])
    batch5 = statistics.mean(mid.batch_s[-n:]) / statistics.mean(mid.batch_s[:n])
    # over all passes: median of last-5 / first-5 claim ratio (robust to one slow batch)
    claim5_all = common.median([statistics.mean(r.claim_s[-n:]) / statistics.mean(r.claim_s[:n]) for r in big])

    common.figure("database", args.database)
    common.figure(f"pass time, {args.due} due in {args.due}-row table (median)", small_s, "s")
    common.figure(f"pass time, {args.due} due in {args.total}-row table (median)", big_s, "s")
    common.figure("ratio big/small table", table_ratio, "x (target <= 1.2)")
    common.figure("batches per pass", len(mid.claim_s))
    common.figure("first / last claim transaction", f"{first_claim * 1000:.1f} ms / {last_claim * 1000:.1f} ms")
    common.figure("first / last batch (claim + enqueue)", f"{first_batch * 1000:.1f} ms / {last_batch * 1000:.1f} ms")
    common.figure("last/first claim", last_claim / first_claim, "x (target <= 1.5)")
    common.figure("last/first batch", last_batch / first_batch, "x")
    common.figure(f"mean of last {n} / first {n} claims", claim5, "x")
    common.figure(f"mean of last {n} / first {n} batches", batch5, "x")
    common.figure(f"median over passes of last-{n}/first-{n} claims", claim5_all, "x")
    common.emit(
        "scale_free",
        {
            "smoke": args.smoke, "database": args.database, "total": args.total, "due": args.due, "chunk": args.chunk, "repeat": repeat,
            "small_table_s": round(small_s, 3), "big_table_s": round(big_s, 3), "table_ratio": round(table_ratio, 3),
            "small_runs_s": [round(r.seconds, 3) for r in small], "big_runs_s": [round(r.seconds, 3) for r in big],
            "batches": len(mid.claim_s), "first_claim_ms": round(first_claim * 1000, 2), "last_claim_ms": round(last_claim * 1000, 2),
            "last_first_claim_ratio": round(last_claim / first_claim, 3), "last_first_batch_ratio": round(last_batch / first_batch, 3),
            "last5_first5_claim_ratio": round(claim5, 3), "last5_first5_batch_ratio": round(batch5, 3),
            "last5_first5_claim_ratio_median_over_passes": round(claim5_all, 3),
            "claim_ms_deciles": [round(mid.claim_s[int(i * (len(mid.claim_s) - 1) / 10)] * 1000, 2) for i in range(11)],
            "target_table_met": table_ratio <= 1.2, "target_batch_met": claim5 <= 1.5, "versions": versions,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
