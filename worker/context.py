"""The per-process state an RQ job function needs, built once from the environment.

RQ calls job functions by import path with plain arguments, so the job function cannot be handed
its dependencies; this is the one place that builds them (settings, engine, clock, task). After a
fork (RQ's fork-per-job worker) the inherited pool is disowned so parent and child never share a
socket.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy import Engine

from monitor_scheduler.clock import clock_for_dialect
from monitor_scheduler.db import create_db_engine
from monitor_scheduler.settings import Settings, load_settings
from worker.runner import Runner
from worker.tasks import load_task

_lock = threading.Lock()
_state: dict[str, object] = {}


def get_runner(worker_name: str | None = None) -> Runner:
    with _lock:
        runner = _state.get("runner")
        if runner is not None and _state.get("pid") != os.getpid():
            # Forked: drop the parent's connections without closing them under its feet.
            runner.engine.dispose(close=False)  # type: ignore[attr-defined]
            _state["pid"] = os.getpid()
        if runner is None:
            settings = load_settings()
            runner = build_runner(settings)
            _state.update(runner=runner, pid=os.getpid())
        if worker_name:
            runner.worker_name = worker_name  # type: ignore[attr-defined]
        return runner  # type: ignore[return-value]


def get_app():  # type: ignore[no-untyped-def]
    """The wired application for job functions that dispatch (the rq-scheduler tick)."""
    from monitor_scheduler.app import App

    with _lock:
        app = _state.get("app")
        if app is not None and _state.get("app_pid") != os.getpid():
            app.engine.dispose(close=False)  # type: ignore[attr-defined]
            _state["app_pid"] = os.getpid()
        if app is None:
            app = App.from_settings(load_settings())
            _state.update(app=app, app_pid=os.getpid())
        return app


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
