"""The task protocol: what the executor calls for each run, and how MONITOR_TASK is loaded.

A task is `task(user_id, context)`. Raising marks the run failed (the error text is stored,
truncated); the schedule's retry policy may run the slot again (core.outcome), unless the task
raised `PermanentError`, which is never retried. What it returns is the run's result
(`encode_result`): a JSON-serialisable value of at most RESULT_LIMIT bytes of JSON is stored with
the run (None stores nothing); anything else is recorded as a note saying why it was not kept, and
the run still succeeds. The built-in tasks live in `worker.tasks` and `worker.webhook`.

A task may be asynchronous (an `async def` function, or an object whose `__call__` is `async def`):
whatever it returns that is awaitable is run to completion on the process's one event loop
(`core.event_loop`), so many runs of it in one process share that loop instead of a loop each.

A long task may call `context.progress(fraction, message)` as often as it likes: the executor
binds a reporter that stores it (throttled, fenced on the run's lease) for the settings page, the
admin overview, the API and `schedule show`. The rules, decided here once:
- `fraction` is a real number (int, float, Fraction, Decimal); outside 0..1 it is clamped (a task
  whose estimate overshoots still reports); NaN, infinities, numbers beyond float's range and
  non-numbers (bool included) are refused;
- `message` is text (None is ""; anything else goes through `str()`), cleaned by core.text's rule:
  control characters and line/paragraph separators become spaces, format characters (bidi
  overrides, zero-width) and lone surrogates are dropped, the ends are stripped and it is cut to
  255 characters (cut while it is cleaned: a huge message costs no more than a short one);
- a refused call is logged and ignored, and a reporter that fails is logged: progress never fails
  a run. A context built without a reporter (a task author's test) validates and does nothing else.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from numbers import Real
from typing import Any, cast

from core.exceptions import PermanentError, TaskImportError
from core.settings import Settings
from core.text import clean_text


logger = logging.getLogger(__name__)

PROGRESS_MESSAGE_LIMIT = 255
"""Characters of a progress message kept (the VARCHAR(255) columns of the schedule and history)."""

__all__ = ["PermanentError", "RunContext", "Task", "clean_progress", "decode_result", "encode_result", "load_task"]

RESULT_LIMIT = 4096
"""Bytes of a run's result (its JSON text, ASCII: other characters are escaped) that are kept."""

RESULT_NOTE_PREFIX = "(not kept: "
"""A stored result that starts with this is a note, not JSON: the task returned something that
was too large or not JSON-serialisable."""


def encode_result(value: object) -> str | None:
    """The stored form of a task's return value: compact JSON (ASCII, so no terminal or bidi
    control reaches a screen raw), None for None; a note (RESULT_NOTE_PREFIX) for a value that is
    not JSON-serialisable (NaN and infinities included) or longer than RESULT_LIMIT."""
    if value is None:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{RESULT_NOTE_PREFIX}a {type(value).__name__} that is not JSON-serialisable: {str(exc)[:200]})"
    if len(text) > RESULT_LIMIT:
        return f"{RESULT_NOTE_PREFIX}{len(text)} bytes of JSON, more than the {RESULT_LIMIT} kept)"
    return text


def decode_result(stored: str | None) -> tuple[Any, str | None]:
    """(the result's value, None) for stored JSON; (None, the note) for a note; (None, None) when
    the run stored no result. For the API, the settings page and `schedule show`."""
    if stored is None:
        return None, None
    if stored.startswith(RESULT_NOTE_PREFIX):
        return None, stored
    try:
        return json.loads(stored, parse_constant=_not_json), None
    except ValueError:  # written by hand (NaN included: no JSON answer can carry it): shown as it is
        return None, stored


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")  # NaN and Infinity: Python's extension of JSON


ProgressReporter = Callable[[float, str], None]
"""Receives progress already checked by `clean_progress`: a fraction in 0..1 and clean text."""


def _no_reporter(fraction: float, message: str) -> None:
    """A context built without a reporter (a task author's test): progress is checked, then dropped."""


def clean_progress(fraction: object, message: object = "") -> tuple[float, str]:
    """The stored form of a progress report; ValueError for a fraction that is no finite number."""
    if isinstance(fraction, bool) or not isinstance(fraction, Real | Decimal):
        raise ValueError(f"progress fraction must be a number from 0 to 1, got {type(fraction).__name__}")
    try:
        value = float(fraction)
    except OverflowError:  # an int or Fraction beyond float's range (10**400): far outside 0..1
        raise ValueError(f"progress fraction out of range: must be a number from 0 to 1, got a {type(fraction).__name__} beyond float range") from None
    except ValueError:  # Decimal("sNaN") will not convert
        raise ValueError(f"progress fraction must be a number from 0 to 1, got {type(fraction).__name__} {fraction}") from None
    if not math.isfinite(value):
        raise ValueError(f"progress fraction must be a number from 0 to 1, got {value}")
    return min(1.0, max(0.0, value)), clean_message(message)


def clean_message(message: object) -> str:
    """A progress message as stored: text, cleaned and cut by the one rule (core.text.clean_text)."""
    text = "" if message is None else message if isinstance(message, str) else str(message)
    return clean_text(text, PROGRESS_MESSAGE_LIMIT)


@dataclass(frozen=True)
class RunContext:
    """What a task is told about its run, and its one way back: `progress()`."""

    slot: datetime
    trigger: str
    attempt: int
    reporter: ProgressReporter = field(default=_no_reporter, repr=False, compare=False)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the run is (0..1) and what it does now. Cheap to call often: the stored
        value is throttled. Never raises: junk is logged and ignored (see the module docstring)."""
        try:
            value, text = clean_progress(fraction, message)
        except ValueError as exc:
            logger.warning("progress ignored (slot=%s attempt=%s): %s", self.slot, self.attempt, exc)
            return
        except Exception:  # a message whose __str__ raises: the report is dropped, the run goes on
            logger.warning("progress ignored (slot=%s attempt=%s): message not printable", self.slot, self.attempt, exc_info=True)
            return
        try:
            self.reporter(value, text)
        except Exception:  # the reporter logs its own failures; this guards the task from a broken one
            logger.warning("progress not recorded (slot=%s attempt=%s)", self.slot, self.attempt, exc_info=True)


Task = Callable[[str, RunContext], object]


def load_task(path: str, settings: Settings | None = None) -> Task:
    """Import `package.module:function`; raise TaskImportError with the path on failure.

    An object with a `from_settings(settings)` factory (a class, say) is built with the settings,
    so a task that needs configuration gets it passed down instead of reading the environment.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        task = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise TaskImportError(f"MONITOR_TASK {path!r} cannot be imported: {exc}") from exc
    factory = getattr(task, "from_settings", None)
    if factory is not None:
        if settings is None:
            raise TaskImportError(f"MONITOR_TASK {path!r} needs settings to be built")
        task = factory(settings)
    if not callable(task):
        raise TaskImportError(f"MONITOR_TASK {path!r} is not callable")
    return cast(Task, task)  # callable, checked above; its signature is the task author's promise
