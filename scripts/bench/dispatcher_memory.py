#!/usr/bin/env python3
"""Benchmark 7: peak RSS of the dispatcher during a 100k-due pass (target <= 150 MB).

The real entry point runs as a child process: `python -m monitor_scheduler.cli dispatch --mode queue
--json` against TOTAL schedules (default 1M) with DUE due (default 100k); its peak RSS is the
child's own high-water mark (VmHWM), which a small launcher reads from /proc as the command exits.
Not ru_maxrss: the kernel carries the parent's high-water mark into a child started by vfork and
exec (Python's subprocess), so it reported this script's own RSS (~10 MB more than the
dispatcher's) whenever the script was the larger. The same command on a table with nothing due
gives the baseline (interpreter + imports + one connection), so the growth a pass causes is
printed too.

    python scripts/bench/dispatcher_memory.py
    python scripts/bench/dispatcher_memory.py --smoke
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


# Runs `python -m monitor_scheduler.cli ARGS` and writes the process's VmHWM (kB) to the file
# named by argv[1] as it exits, whatever the exit.
LAUNCHER = """
import atexit, re, runpy, sys
out = sys.argv.pop(1)

def note_peak():
    with open("/proc/self/status") as status:
        peak = re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1)
    with open(out, "w") as f:
        f.write(peak)

atexit.register(note_peak)
runpy.run_module("monitor_scheduler.cli", run_name="__main__", alter_sys=True)
"""


def run_measured(url: str, redis_url: str, chunk: int) -> tuple[dict[str, Any], float, float]:
    """Run the CLI pass and return (summary, wall seconds, the child's peak RSS MB)."""
    env = common.child_env(
        DATABASE_URL=url, REDIS_URL=redis_url, QUEUE_NAME=common.QUEUE, DISPATCH_BATCH_SIZE="10000000",
        DISPATCH_CHUNK_SIZE=str(chunk), QUEUE_MAX_DEPTH="100000000", LOG_LEVEL="WARNING",
    )
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-dispatch-{os.getpid()}.out"
    err_path = out_path.with_suffix(".err")
    peak_path = out_path.with_suffix(".peak")
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.run(
            [common.PYTHON, "-c", LAUNCHER, str(peak_path), "dispatch", "--mode", "queue", "--json"],
            env=env, cwd=str(common.REPO_ROOT), stdout=out, stderr=err, check=False,
        )
    seconds = time.perf_counter() - t0
    stdout, stderr = out_path.read_text(), err_path.read_text()
    peak_kb = int(peak_path.read_text())
    for path in (out_path, err_path, peak_path):
        path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dispatch exited {proc.returncode}: {stderr[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), seconds, peak_kb / 1024


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    args = parser.parse_args()
    if args.smoke:
        args.total, args.due, args.chunk = 2_000, 500, 100

    with common.servers() as srv:
        versions = srv.versions()
        url = common.new_database(srv.mariadb, "bench_memory")
        engine = common.sqlalchemy_engine(url)
        base = common.db_now(engine)
        engine.dispose()
        seed_s = common.seed_schedules(srv.mariadb, url, total=args.total, due=args.due, base=base)
        common.log(f"seeded {args.total} rows ({args.due} due) in {seed_s:.1f}s")
        common.warm(srv.mariadb, url)
        common.flush_redis(srv.redis_url)
        summary, seconds, peak_mb = run_measured(url, srv.redis_url, args.chunk)
        assert summary["enqueued"] == args.due, summary
        # nothing is due now: the baseline of the same command
        idle_summary, _, idle_mb = run_measured(url, srv.redis_url, args.chunk)
        assert idle_summary["claimed"] == 0, idle_summary
        srv.mariadb.drop_database(url.rsplit("/", 1)[1])

    common.figure("table rows / due", f"{args.total} / {args.due}")
    common.figure("pass (CLI process, incl. start-up)", seconds, "s")
    common.figure("enqueued", summary["enqueued"])
    common.figure("peak RSS, 100k-due pass" if not args.smoke else "peak RSS, pass", peak_mb, "MB (target <= 150)")
    common.figure("peak RSS, same command with nothing due", idle_mb, "MB")
    common.figure("growth caused by the pass", peak_mb - idle_mb, "MB")
    common.emit(
        "dispatcher_memory",
        {
            "smoke": args.smoke, "total": args.total, "due": args.due, "chunk": args.chunk,
            "enqueued": summary["enqueued"], "pass_s": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1),
            "idle_peak_rss_mb": round(idle_mb, 1), "growth_mb": round(peak_mb - idle_mb, 1),
            "target_met": peak_mb <= 150, "versions": versions,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
