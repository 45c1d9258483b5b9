#!/usr/bin/env python3
"""Start `ThreadedWorker` processes whatever the thread count (the CLI uses rq.SimpleWorker for
--threads 1): benchmark 4 measures the threaded worker's own overhead with one thread.

    python scripts/bench/threaded_worker.py CONCURRENCY THREADS    # settings from the environment
"""

from __future__ import annotations

import sys

from redis import Redis
from rq import Queue
from rq.worker_pool import WorkerPool

from core.logs import configure_logging
from core.settings import load_settings
from worker import context
from worker.threaded import ThreadedWorker


def main() -> int:
    concurrency, threads = int(sys.argv[1]), int(sys.argv[2])
    settings = load_settings()
    configure_logging(settings)
    connection = Redis.from_url(settings.REDIS_URL or "")
    context.get_runner(threads=threads)
    cls = ThreadedWorker.with_threads(threads)
    if concurrency == 1:
        cls([Queue(settings.QUEUE_NAME, connection=connection)], connection=connection).work(logging_level=settings.LOG_LEVEL)
    else:
        WorkerPool([settings.QUEUE_NAME], connection=connection, num_workers=concurrency, worker_class=cls).start(logging_level=settings.LOG_LEVEL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
