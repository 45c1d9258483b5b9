"""`monitor-scheduler worker`: RQ workers on the queue, visible in `rq info`.

Worker class (see docs/performance.md for the measurement): `simple` (rq.SimpleWorker) runs jobs in
the worker process itself, saving a fork per job; `fork` (rq.Worker) isolates each job in a fresh
child, for tasks that leak memory or may crash the interpreter. Shutdown is warm either way: on
SIGTERM/SIGINT the running job finishes, then the worker exits (a second signal forces it).
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool

from monitor_scheduler.settings import Settings

logger = logging.getLogger(__name__)

WORKER_CLASSES: dict[str, type[BaseWorker]] = {"simple": SimpleWorker, "fork": Worker}


def run_workers(settings: Settings, connection: Redis, *, concurrency: int, burst: bool, worker_class: str) -> int:
    cls = WORKER_CLASSES[worker_class]
    # Import the job module and build the run context (settings, engine, task) here, once: forked
    # workers and fork-per-job children inherit it instead of importing and building it per job
    # (77 ms of each fork-class job, docs/performance.md). No connection is opened yet, and the
    # context disowns the inherited pool after a fork.
    from worker import context, jobs  # noqa: F401  (jobs: imported for RQ, see above)

    context.get_runner()
    if concurrency == 1:
        # One process: no pool parent in between (what PM2 instances and systemd units want).
        rq_worker = cls([Queue(settings.QUEUE_NAME, connection=connection)], connection=connection)
        rq_worker.work(burst=burst, logging_level=settings.LOG_LEVEL, with_scheduler=False)
        return 0
    pool = WorkerPool([settings.QUEUE_NAME], connection=connection, num_workers=concurrency, worker_class=cls)
    pool.start(burst=burst, logging_level=settings.LOG_LEVEL)
    return 0
