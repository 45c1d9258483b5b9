#!/usr/bin/env python3
"""Benchmark 1: dispatch throughput, ours vs a plain reference, in one run.

TOTAL schedules in MariaDB or PostgreSQL (--database; default 1,000,000), DUE of them due (default 100,000); one queue-mode
dispatch pass with Redis. The reference (passes.reference) is batched SELECT ... FOR UPDATE SKIP
LOCKED + UPDATE + COMMIT, then RQ Queue.enqueue_many in one pipeline, same batch size. Each is run
REPEAT times, alternating which goes first, on the same table reset to its seeded state; medians.

    python scripts/bench/dispatch_throughput.py            # full: 1M rows, 100k due, 3 rounds
    python scripts/bench/dispatch_throughput.py --smoke    # 2,000 rows, 500 due, 1 round
    python scripts/bench/dispatch_throughput.py --database postgresql   # the same on PostgreSQL
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import passes  # noqa: E402
from redis import Redis  # noqa: E402

from dispatcher.enqueue import RqEnqueuer  # noqa: E402


def load_enqueuer(path: str | None) -> type[RqEnqueuer] | None:
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000, help="DISPATCH_CHUNK_SIZE and the reference's batch size")
    parser.add_argument("--enqueuer", default=None, help="module:Class replacing RqEnqueuer in our pass (to compare another enqueue)")
    common.add_database_option(parser)
    args = parser.parse_args()
    if args.smoke:
        args.total, args.due, args.chunk = 2_000, 500, 100
    repeat = args.repeat or (1 if args.smoke else 3)
    enqueuer_class = load_enqueuer(args.enqueuer)

    with common.servers(args.database) as srv:
        versions = srv.versions()
        db = srv.database
        url = db.new_database("bench_dispatch")
        engine = common.sqlalchemy_engine(url)
        base = common.db_now(engine)
        seed_s = db.seed_schedules(url, total=args.total, due=args.due, base=base)
        common.log(f"seeded {args.total} rows ({args.due} due) in {seed_s:.1f}s")
        assert db.count_due(url, base) == args.due
        settings = common.settings_for(url, srv.redis_url, DISPATCH_CHUNK_SIZE=args.chunk)
        redis_conn = Redis.from_url(srv.redis_url)

        ours, reference = [], []
        for round_ in range(repeat):
            order = ["ours", "reference"] if round_ % 2 == 0 else ["reference", "ours"]
            for which in order:
                common.flush_redis(srv.redis_url)
                db.reset_claimed(url, total=args.total, due=args.due, base=base)
                db.warm(url)
                if which == "ours":
                    result = passes.ours(engine, settings, redis_conn, base, enqueuer_class=enqueuer_class)
                    ours.append(result)
                else:
                    result = passes.reference(
                        engine, redis_conn, base, chunk=args.chunk, lease_ms=settings.DISPATCH_LOCK_TTL, queue_name=settings.QUEUE_NAME
                    )
                    reference.append(result)
                queued = passes.queue_length(redis_conn, settings.QUEUE_NAME)
                assert result.rows == args.due and queued == args.due, (which, result.rows, queued)
                common.log(f"round {round_ + 1} {which}: {result.rows} rows in {result.seconds:.2f}s = {result.rate:.0f} rows/s")

        ours_rate = common.median([r.rate for r in ours])
        ref_rate = common.median([r.rate for r in reference])
        ratio = ours_rate / ref_rate
        ours_claim = common.median([sum(r.claim_s) for r in ours])
        ours_enq = common.median([sum(r.enqueue_s) for r in ours])
        ref_claim = common.median([sum(r.claim_s) for r in reference])
        ref_enq = common.median([sum(r.enqueue_s) for r in reference])
        common.figure("database", db.name)
        common.figure("table rows", args.total)
        common.figure("due rows", args.due)
        common.figure("batch size", args.chunk)
        common.figure("enqueuer", args.enqueuer or "dispatcher.enqueue:RqEnqueuer")
        common.figure("ours rows/s (median)", ours_rate)
        common.figure("reference rows/s (median)", ref_rate)
        common.figure("ours runs", ", ".join(f"{r.seconds:.2f}s" for r in ours))
        common.figure("reference runs", ", ".join(f"{r.seconds:.2f}s" for r in reference))
        common.figure("ours split: claim / enqueue", f"{ours_claim:.2f}s / {ours_enq:.2f}s")
        common.figure("reference split: claim / enqueue", f"{ref_claim:.2f}s / {ref_enq:.2f}s")
        common.figure("ratio ours/reference", ratio, "x (target >= 1.0, stretch 1.5)")
        redis_conn.close()
        engine.dispose()
        db.drop_database(url)
        common.emit(
            "dispatch_throughput",
            {
                "smoke": args.smoke, "database": db.name, "total": args.total, "due": args.due, "chunk": args.chunk, "repeat": repeat,
                "enqueuer": args.enqueuer or "dispatcher.enqueue:RqEnqueuer",
                "ours_rows_per_s": round(ours_rate, 1), "reference_rows_per_s": round(ref_rate, 1),
                "ratio": round(ratio, 3), "ours_seconds": [round(r.seconds, 3) for r in ours],
                "reference_seconds": [round(r.seconds, 3) for r in reference],
                "ours_claim_s": round(ours_claim, 3), "ours_enqueue_s": round(ours_enq, 3),
                "reference_claim_s": round(ref_claim, 3), "reference_enqueue_s": round(ref_enq, 3),
                "seed_s": round(seed_s, 2), "target_met": ratio >= 1.0, "versions": versions,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
