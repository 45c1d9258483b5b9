"""The per-process state an RQ job function needs, built once from the environment.

RQ calls job functions by import path with plain arguments, so the job function cannot be handed
its dependencies; this is the one place that builds them (settings, engine, clock, task). After a
fork (RQ's fork-per-job worker) the inherited pool is disowned so parent and child never share a
socket.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from monitor_scheduler.clock import clock_for_dialect
from monitor_scheduler.db import create_db_engine
from monitor_scheduler.settings import Settings, load_settings
from worker.runner import Runner
from worker.tasks import load_task

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _per_process(key: str, build: Callable[[], Any]) -> Any:
    """The object cached under `key`, built once per process. After a fork (RQ's fork-per-job
    worker) the inherited engine's pool is disowned without closing the parent's connections."""
    with _lock:
        held = _state.get(key)
        if held is not None and _state.get(f"{key}_pid") != os.getpid():
            held.engine.dispose(close=False)
            _state[f"{key}_pid"] = os.getpid()
        if held is None:
            held = build()
            _state.update({key: held, f"{key}_pid": os.getpid()})
        return held


def get_runner(worker_name: str | None = None) -> Runner:
    runner: Runner = _per_process("runner", lambda: build_runner(load_settings()))
    if worker_name:
        runner.worker_name = worker_name
    return runner


def get_app() -> Any:
    """The wired application for job functions that dispatch (the rq-scheduler tick)."""
    from monitor_scheduler.app import App

    return _per_process("app", lambda: App.from_settings(load_settings()))


def build_runner(settings: Settings, engine: Engine | None = None) -> Runner:
    engine = engine or create_db_engine(settings.DATABASE_URL, pool_size=2)
    return Runner(engine, settings, clock_for_dialect(engine.dialect.name), load_task(settings.MONITOR_TASK, settings))


def reset() -> None:
    """Forget the cached state (tests that change the environment between jobs)."""
    with _lock:
        runner = _state.pop("runner", None)
        if runner is not None:
            runner.engine.dispose()  # type: ignore[attr-defined]
        app = _state.pop("app", None)
        if app is not None:
            app.close()  # type: ignore[attr-defined]
        _state.clear()
