"""Tasks for the benchmarks (MONITOR_TASK=bench_tasks:..., with scripts/bench on PYTHONPATH)."""

from __future__ import annotations

import os
import time


def sleep_task(user_id: str, context: object) -> None:
    """An I/O-bound run: waits BENCH_SLEEP seconds (default 2) without using the CPU."""
    time.sleep(float(os.environ.get("BENCH_SLEEP", "2")))
