#!/usr/bin/env python3
"""Profile of the run path: one sync-mode pass of N no-op runs on SQLite under cProfile.

Prints runs/s under the profiler (slower than unprofiled; compare only with itself) and the top
functions by cumulative time. Used for the per-run cost items in docs/performance.md.

    python scripts/bench/profile_sync_path.py [--runs 2000] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests import seeding  # noqa: E402
from dispatcher.service import Mode  # noqa: E402
from monitor_scheduler.wiring import App  # noqa: E402
from core.settings import load_settings  # noqa: E402
from schema.migrate import upgrade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(env_file=None, DATABASE_URL=f"sqlite:///{tmp}/profile.db", MONITOR_TASK="worker.tasks:noop_task", LOG_LEVEL="WARNING")
        app = App.from_settings(settings)
        upgrade(app.engine)
        now = datetime.utcnow()
        with app.engine.begin() as conn:
            seeding.add_schedules(conn, [f"u{i}" for i in range(args.runs)], due_at=now - timedelta(minutes=1))
        dispatcher = app.dispatcher(Mode.SYNC)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        summary = dispatcher.tick()
        profile.disable()
        elapsed = time.perf_counter() - started
        print(f"runs: {summary.ran}, runs/s under cProfile: {summary.ran / elapsed:.0f}")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
        app.close()


if __name__ == "__main__":
    main()
