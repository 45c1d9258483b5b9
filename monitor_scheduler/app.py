"""Wiring: builds the engine, clock, queue and services from one Settings object.

Entry points (CLI, web, RQ job context) call this; nothing below it reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from redis import Redis
from sqlalchemy import Engine

from monitor_scheduler.clock import Clock, clock_for_dialect
from monitor_scheduler.db import create_db_engine
from monitor_scheduler.exceptions import ConfigurationError
from monitor_scheduler.settings import Settings
from dispatcher.enqueue import RqEnqueuer
from dispatcher.service import Dispatcher, Mode
from worker.runner import Runner
from worker.tasks import load_task


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> App:
        engine = create_db_engine(settings.DATABASE_URL)
        return cls(settings, engine, clock or clock_for_dialect(engine.dialect.name))

    @cached_property
    def redis(self) -> Redis:
        if self.settings.REDIS_URL is None:
            raise ConfigurationError("invalid setting REDIS_URL: required here (queue mode, workers, rq-scheduler tick)")
        return Redis.from_url(self.settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=30)

    def default_mode(self) -> Mode:
        return Mode.QUEUE if self.settings.queue_mode_available else Mode.SYNC

    def runner(self) -> Runner:
        return Runner(self.engine, self.settings, self.clock, load_task(self.settings.MONITOR_TASK, self.settings))

    def enqueuer(self) -> RqEnqueuer:
        return RqEnqueuer(self.redis, self.settings.QUEUE_NAME, self.settings.JOB_TIMEOUT)

    def dispatcher(self, mode: Mode) -> Dispatcher:
        if mode is Mode.QUEUE:
            return Dispatcher(self.engine, self.settings, self.clock, enqueuer=self.enqueuer())
        return Dispatcher(self.engine, self.settings, self.clock, runner=self.runner())

    def close(self) -> None:
        self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
