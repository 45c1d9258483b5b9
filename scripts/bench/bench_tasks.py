"""Tasks for the benchmarks (MONITOR_TASK=bench_tasks:..., with scripts/bench on PYTHONPATH), and
the "bare RQ" worker classes worker_overhead.py runs through RQ's own command."""

from __future__ import annotations

import os
import time

from rq import SimpleWorker, Worker

from worker.outages import StopsPubsubPromptly


def sleep_task(user_id: str, context: object) -> None:
    """An I/O-bound run: waits BENCH_SLEEP seconds (default 2) without using the CPU."""
    time.sleep(float(os.environ.get("BENCH_SLEEP", "2")))


class BareSimpleWorker(StopsPubsubPromptly, SimpleWorker):
    """rq.SimpleWorker as RQ ships it, but for the exit: RQ 3.0 with redis-py 8 may wait a minute
    for its pubsub thread when it stops (worker.outages.StopsPubsubPromptly), which the benchmark
    would spend stopping it. Nothing of a job's path differs."""


class BareForkWorker(StopsPubsubPromptly, Worker):
    """rq.Worker (a fork per job) as RQ ships it, but for the exit (see BareSimpleWorker)."""
