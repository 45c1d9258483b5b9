"""The per-process state an RQ job function needs, built once from the environment.

RQ calls job functions by import path with plain arguments, so the job function cannot be handed
its dependencies; this is the one place in a worker that builds them (settings, engine, clock,
the runner, and for the rq-scheduler tick a queue dispatcher), each through the same factory the
entry layer uses. After a fork (RQ's fork-per-job worker) the inherited pool is disowned so parent
and child never share a socket.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

from redis import Redis
from sqlalchemy import Engine

from core.clock import Clock, clock_for_dialect
from core.db import create_db_engine
from core.exceptions import ConfigurationError
from core.executor import Runner
from core.settings import Settings, load_settings
from dispatcher.service import Dispatcher

WORKER_POOL_SIZE = 2


def pool_size_for(threads: int) -> int:
    """Database connections a worker process keeps: one per run thread (each holds one at a time,
    for its lease check and its finish) plus the lease keeper's and the timeout watchdog's."""
    return max(WORKER_POOL_SIZE, threads + 2)


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    clock: Clock
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def from_settings(cls, settings: Settings, *, threads: int = 1) -> WorkerContext:
        engine = create_db_engine(settings.DATABASE_URL, pool_size=pool_size_for(threads))
        return cls(settings, engine, clock_for_dialect(engine.dialect.name))

    @cached_property
    def runner(self) -> Runner:
        return Runner.from_settings(self.settings, self.engine, self.clock)

    @cached_property
    def redis(self) -> Redis:
        if self.settings.REDIS_URL is None:
            raise ConfigurationError("invalid setting REDIS_URL: required by the rq-scheduler tick job")
        return Redis.from_url(self.settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=30)

    @cached_property
    def queue_dispatcher(self) -> Dispatcher:
        return Dispatcher.for_queue(self.settings, self.engine, self.clock, self.redis)

    def after_fork(self) -> None:
        """Disown the parent's pooled connections without closing them (they are the parent's)."""
        self.engine.dispose(close=False)
        self.pid = os.getpid()

    def close(self) -> None:
        self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()


_lock = threading.Lock()
_context: WorkerContext | None = None


def get_context(*, threads: int = 1) -> WorkerContext:
    """This process's context, built on first use (`threads`: the runs it will execute at once, which
    size its connection pool); after a fork, the child disowns the pool."""
    global _context
    with _lock:
        if _context is None:
            _context = WorkerContext.from_settings(load_settings(), threads=threads)
        elif _context.pid != os.getpid():
            _context.after_fork()
        return _context


def get_runner(worker_name: str | None = None, *, threads: int = 1) -> Runner:
    runner = get_context(threads=threads).runner
    if worker_name and runner.worker_name != worker_name:
        runner.worker_name = worker_name
    return runner


def reset() -> None:
    """Forget the cached state (tests that change the environment between jobs)."""
    global _context
    with _lock:
        if _context is not None:
            _context.close()
        _context = None
