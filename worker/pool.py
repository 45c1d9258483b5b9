"""`monitor-scheduler worker`: RQ workers on the queue, visible in `rq info`.

Worker class (see docs/performance.md for the measurement): `simple` (rq.SimpleWorker) runs jobs in
the worker process itself, saving a fork per job; `fork` (rq.Worker) isolates each job in a fresh
child, for tasks that leak memory or may crash the interpreter. Shutdown is warm either way: on
SIGTERM/SIGINT the running job finishes, then the worker exits (a second signal forces it).
Both ride out Redis outages (worker.outages): they wait for Redis and go on, never exit on one;
the WorkerPool's children are the same classes. They extend RQ through its public seams only
(worker.rq_adapter, which checks at start that the installed RQ still offers them).
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool

from core.settings import Settings
from worker import context, jobs, rq_adapter
from worker.outages import RidingOutRedis, WaitingForRedis
from worker.stops import NotesStopRequests
from worker.threaded import ThreadedWorker
from worker.timeouts import RunDeathPenalty

logger = logging.getLogger(__name__)

# RQ resolves job functions by their import path; importing the module here means forked workers
# and fork-per-job children inherit it instead of importing it per job.
JOB_MODULE = jobs.__name__


class NotingSimpleWorker(RidingOutRedis, NotesStopRequests, SimpleWorker):
    """rq.SimpleWorker (jobs in the worker process) that notes stop requests and rides out Redis
    outages (worker.outages)."""

    death_penalty_class = RunDeathPenalty  # JOB_TIMEOUT fails the run and the job (worker.timeouts)


class NotingWorker(RidingOutRedis, NotesStopRequests, Worker):
    """rq.Worker (a fork per job) that notes stop requests and rides out Redis outages."""

    death_penalty_class = RunDeathPenalty


WORKER_CLASSES: dict[str, type[BaseWorker]] = {"simple": NotingSimpleWorker, "fork": NotingWorker}


def run_workers(settings: Settings, connection: Redis, *, concurrency: int, burst: bool, worker_class: str, threads: int = 1) -> int:
    cls = WORKER_CLASSES[worker_class]
    if threads > 1:  # N runs at once in each process
        cls = ThreadedWorker.with_threads(threads)
    for problem in rq_adapter.rq_differs([cls, cls.death_penalty_class, WaitingForRedis]):
        logger.error("this RQ version differs from the one the worker was written for: %s", problem)
    # Build the run context (settings, engine, task) here, once: forked workers and fork-per-job
    # children inherit it instead of building it per job (77 ms of each fork-class job,
    # docs/performance.md). No connection is opened yet, and the context disowns the inherited
    # pool after a fork.
    context.get_runner(threads=threads)
    if concurrency == 1:
        # One process: no pool parent in between (what PM2 instances and systemd units want).
        rq_worker = cls([Queue(settings.QUEUE_NAME, connection=connection)], connection=connection)
        rq_worker.work(burst=burst, logging_level=settings.LOG_LEVEL, with_scheduler=False)
        return 0
    pool = WorkerPool([settings.QUEUE_NAME], connection=connection, num_workers=concurrency, worker_class=cls)
    pool.start(burst=burst, logging_level=settings.LOG_LEVEL)
    return 0
