"""How the command line shows things: times, schedules, pass summaries; and how its loops stop."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Sequence
from datetime import datetime
from types import FrameType

from core import shutdown
from core.calendar import local_time
from core.clock import utc_text
from core.domain import DispatchSummary, RunRecord, Schedule
from services.results import split_result
from services.schedules import FailurePolicy
from core.text import clean_error
from dispatcher.loop import DispatchLoop

logger = logging.getLogger(__name__)


def fmt(moment: datetime | None) -> str:
    """A time in a table for people: "-" when not set."""
    return utc_text(moment, sep=" ")


def json_time(moment: datetime | None) -> str | None:
    """A time in the command line's JSON: ISO 8601 as the API writes it, null when not set (a
    script reading it should not have to know our table's "-")."""
    return None if moment is None else utc_text(moment)


def printable_error(error: str | None) -> str | None:
    """An error as a terminal may show it: rows stored before errors were cleaned may hold terminal
    and bidi control characters (a task's or a remote server's text)."""
    return None if error is None else clean_error(error)


def slot_line(slot: datetime, zone: str) -> str:
    """One slot as `schedule preview` prints it: the UTC instant, then the wall-clock time there."""
    local = local_time(slot, zone)
    return f"{utc_text(slot)}  {local:%a %Y-%m-%d %H:%M} {local.tzname()} ({local:%z}) {zone}"


def pause_after_json(value: int | None) -> int | str | None:
    """pauseAfter as the API spells it: "off" for never (stored 0), null for the settings default."""
    return "off" if value == 0 else value


def schedule_dict(schedule: Schedule, policy: FailurePolicy) -> dict[str, object]:
    """A schedule as the command line's JSON, the failure policy that applies (`policy`:
    Schedules.effective_policy) beside the schedule's own values (null: the settings default)."""
    return {
        "userId": schedule.user_id,
        "enabled": schedule.enabled,
        "kind": schedule.kind,
        "intervalMinutes": schedule.interval_minutes,
        "cron": schedule.cron_expr,
        "timeZone": schedule.time_zone,
        "spreadSeconds": schedule.spread_seconds,
        "nextRunAt": json_time(schedule.next_run_at),
        "lastRunAt": json_time(schedule.last_run_at),
        "lastStatus": schedule.last_status,
        "lastError": printable_error(schedule.last_error),
        "lockedUntil": json_time(schedule.locked_until),
        "lockedBy": schedule.locked_by,
        "state": schedule.state.value,
        "runStartedAt": json_time(schedule.run_started_at),
        "progress": schedule.progress,
        "progressMessage": schedule.progress_message,
        "progressAt": json_time(schedule.progress_at),
        "paused": schedule.paused,
        "pausedAt": json_time(schedule.paused_at),
        "pausedReason": printable_error(schedule.paused_reason),
        "failedSlots": schedule.failed_slots,
        "retries": schedule.retries,
        "retryBackoffSeconds": schedule.retry_backoff_seconds,
        "pauseAfter": pause_after_json(schedule.pause_after),
        "effective": {"retries": policy.retries, "retryBackoffSeconds": policy.backoff_seconds,
                      "pauseAfter": pause_after_json(policy.pause_after)},
    }


def run_dict(run: RunRecord) -> dict[str, object]:
    """A history row as `schedule show` prints it: the task's result as JSON (as the API gives
    it), or the note why it was not kept."""
    result, note = split_result(run.result)
    return {"slot": json_time(run.slot), "trigger": run.trigger, "attempt": run.attempt, "status": run.status,
            "finishedAt": json_time(run.finished_at), "durationMs": run.duration_ms, "error": printable_error(run.error),
            "progressMessage": run.progress_message, "result": result, "resultNote": printable_error(note)}


def print_schedules(rows: Sequence[Schedule]) -> None:
    print(f"{'userId':<24} {'enabled':<7} {'every':>6} {'nextRunAt':<24} {'lastRunAt':<24} {'lastStatus':<10} lockedBy")
    for r in rows:
        print(
            f"{r.user_id:<24} {('yes' if r.enabled else 'no'):<7} {str(r.interval_minutes) + 'm':>6} "
            f"{fmt(r.next_run_at):<24} {fmt(r.last_run_at):<24} {('paused' if r.paused else r.last_status or '-'):<10} {r.locked_by or '-'}"
        )


def print_summary(summary: DispatchSummary, as_json: bool) -> None:
    print(json.dumps(summary.as_dict()) if as_json else summary.line())


def stop_on_signals(loop: DispatchLoop) -> None:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the current pass", signum)
        loop.stop.set()

    signal.signal(signal.SIGTERM, shutdown.noting(request_stop))
    signal.signal(signal.SIGINT, shutdown.noting(request_stop))
