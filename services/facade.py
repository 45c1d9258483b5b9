"""The service layer in one object: what the CLI and the web both hold and call.

`Services` groups the services by topic (schedules, runs, status, web sessions) and builds each
once from a `Wiring`: the entry layer's App satisfies it, so the services never construct engines,
Redis clients or dispatchers themselves, and the web never imports the entry layer or the
dispatcher.
"""

from __future__ import annotations

from typing import Protocol

from redis import Redis
from sqlalchemy import Engine

from core.clock import Clock
from core.domain import Mode
from core.retry import RetryDefaults
from core.settings import Settings
from dispatcher.service import Dispatcher
from services.runs import Runs
from services.schedules import Schedules
from services.sessions import SessionService
from services.status import Status


class Wiring(Protocol):
    """What the services need from the entry layer's wiring."""

    settings: Settings
    engine: Engine
    clock: Clock

    @property
    def redis(self) -> Redis: ...

    def dispatcher(self, mode: Mode) -> Dispatcher: ...


class Services:
    """One per process: `schedules` (set, show, list, seed), `runs` (run now, pass, history,
    unlock, prune), `status` (capacity, queue health, dispatcher status, readiness, dead-man check)
    and `sessions` (the web's sign-in tokens and sessions)."""

    def __init__(self, wiring: Wiring) -> None:
        self.settings = wiring.settings
        settings = wiring.settings
        self.schedules = Schedules(wiring.engine, wiring.clock, default_interval=settings.DEFAULT_INTERVAL_MINUTES,
                                   spread_start=settings.SPREAD_START_TIMES,
                                   policy_defaults=RetryDefaults.from_settings(settings))
        self.runs = Runs(wiring.settings, wiring.engine, wiring.clock, wiring.dispatcher, self.schedules)
        # The Redis client is only built (no connection yet) in queue mode: sync mode has none.
        self.status = Status(wiring.settings, wiring.engine, wiring.clock, wiring.redis if wiring.settings.queue_mode_available else None)
        self.sessions = SessionService(wiring.engine, wiring.clock)
