"""Wiring: builds the engine, clock, Redis client, runner and dispatchers from one Settings object.

The entry points (the command line, the web server command) build one App; the layers below are
handed what they need and never read the environment. Each object is built once, on first use: the
sync runner imports MONITOR_TASK, the queue dispatcher opens Redis.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from redis import Redis
from sqlalchemy import Engine

from core.clock import Clock, clock_for_dialect
from core.db import DEFAULT_POOL_SIZE, create_db_engine
from core.exceptions import ConfigurationError
from core.executor import Runner
from core.settings import Settings
from core.domain import Mode
from dispatcher.service import Dispatcher
from services.facade import Services


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock
    _dispatchers: dict[Mode, Dispatcher] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> App:
        # One connection for each sync-mode run at once (its start and its finish), beside the
        # web's and the lease keeper's: the default pool would make SYNC_THREADS runs queue for one.
        engine = create_db_engine(settings.DATABASE_URL, pool_size=max(DEFAULT_POOL_SIZE, settings.SYNC_THREADS + 2))
        return cls(settings, engine, clock or clock_for_dialect(engine.dialect.name))

    @cached_property
    def redis(self) -> Redis:
        if self.settings.REDIS_URL is None:
            raise ConfigurationError("invalid setting REDIS_URL: required here (queue mode, workers, rq-scheduler tick)")
        return Redis.from_url(self.settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=30)

    @cached_property
    def services(self) -> Services:
        return Services(self)

    def runner(self) -> Runner:
        return Runner.from_settings(self.settings, self.engine, self.clock)

    def dispatcher(self, mode: Mode) -> Dispatcher:
        with self._lock:
            if mode not in self._dispatchers:
                self._dispatchers[mode] = self._build_dispatcher(mode)
            return self._dispatchers[mode]

    def _build_dispatcher(self, mode: Mode) -> Dispatcher:
        if mode is Mode.QUEUE:
            return Dispatcher.for_queue(self.settings, self.engine, self.clock, self.redis)
        return Dispatcher.inline(self.settings, self.engine, self.clock, self.runner())

    def close(self) -> None:
        self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
