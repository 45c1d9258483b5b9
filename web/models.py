"""Request and response bodies of the JSON API (they are what /openapi.json documents).

Request bodies are strict (no "5" for 5, no unknown fields such as a `userId` sneaked into
/api/schedules/me) and flat, so their JSON schema can be inlined into the OpenAPI document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
from typing_extensions import override

from core.calendar import MAX_SPREAD_SECONDS, local_time, upcoming_slots
from core.domain import RunRecord, Schedule
from core.scheduling import (
    MAX_INTERVAL_MINUTES,
    MAX_PAUSE_AFTER,
    MAX_RETRIES,
    MAX_RETRY_BACKOFF_SECONDS,
    MAX_USER_ID_LENGTH,
    MIN_INTERVAL_MINUTES,
    MIN_PAUSE_AFTER,
    MIN_RETRY_BACKOFF_SECONDS,
    PAUSE_NEVER,
    validate_pause_after,
    validate_user_id,
)
from services.results import split_result
from services.schedules import USE_DEFAULT, CalendarChange, FailurePolicy, PolicyChange

# The documented shape of a user id (scheduling.validate_user_id is the rule and runs too): no
# control, format or separator characters, no whitespace at either end.
_NOT_ID = r"\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
USER_ID_PATTERN = rf"^[^\s{_NOT_ID}](?:[^{_NOT_ID}]*[^\s{_NOT_ID}])?$"


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """The database keeps naive UTC; the API says so explicitly (ISO 8601 with a zone)."""
    return None if moment is None else moment.replace(tzinfo=UTC)


# --- requests -------------------------------------------------------------------------------------


class ScheduleUpdate(BaseModel):
    """Fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = Field(default=None, description="Auto-monitoring on or off.")
    intervalMinutes: int | None = Field(
        default=None, ge=MIN_INTERVAL_MINUTES, le=MAX_INTERVAL_MINUTES, description="Minutes between runs (1-1440)."
    )

    kind: Literal["interval", "cron"] | None = Field(
        default=None, description='"interval": runs every intervalMinutes (switches a calendar schedule back); '
                                  '"cron": a calendar schedule (needs cron, or keeps the current expression).')
    cron: str | None = Field(default=None, max_length=100, description='A 5-field cron expression such as "0 9 * * MON-FRI" (implies kind "cron").')
    timeZone: str | None = Field(default=None, max_length=64, description="IANA time zone of the expression, e.g. Europe/Berlin (default: unchanged, else UTC).")
    spreadSeconds: int | None = Field(default=None, ge=0, le=MAX_SPREAD_SECONDS,
                                      description="A calendar schedule starts up to this many seconds late, by a stable per-user offset.")

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleUpdate:
        if self.kind == "interval" and self.cron is not None:
            raise ValueError('kind "interval" and a cron expression contradict each other')
        return self

    @model_validator(mode="before")
    @classmethod
    def _operators_only(cls, data: object) -> object:
        # Before the unknown-field check, so that a user is told why rather than "extra input".
        if cls is ScheduleUpdate and isinstance(data, dict) and any(name in data for name in POLICY_FIELDS):
            raise ValueError(f"{', '.join(name for name in POLICY_FIELDS if name in data)}: set by an administrator only "
                             "(PATCH /api/admin/schedule); GET /api/schedules/me shows what applies")
        return data

    def calendar_change(self) -> CalendarChange:
        """The calendar fields as the service takes them (it validates expression, zone, spread)."""
        return CalendarChange(cron=self.cron, time_zone=self.timeZone, spread=self.spreadSeconds, to_interval=self.kind == "interval")

    def policy_change(self) -> PolicyChange:
        """No failure-policy fields for users (refused above); AdminScheduleUpdate has them."""
        return PolicyChange()

    @field_validator("intervalMinutes", mode="before")
    @classmethod
    def _integral_number(cls, value: object) -> object:
        return _integral(value)


POLICY_FIELDS = ("retries", "retryBackoffSeconds", "pauseAfter")
PauseAfter = Annotated[int, Field(ge=MIN_PAUSE_AFTER, le=MAX_PAUSE_AFTER)] | Literal["off", "never"]


def _integral(value: object) -> object:
    # JSON does not tell 30 from 30.0 and JSON Schema calls both integers; "30", 30.5 and true stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class AdminScheduleUpdate(ScheduleUpdate):
    """An operator's change: the user's fields, plus the schedule's failure policy. Left out: as
    it is; null: back to the settings default (DEFAULT_RETRIES, RETRY_BACKOFF_SECONDS,
    PAUSE_AFTER_FAILED_SLOTS)."""

    retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES,
                                description=f"Attempts after the first within one slot when a run fails, 0-{MAX_RETRIES}; null: the settings default.")
    retryBackoffSeconds: int | None = Field(
        default=None, ge=MIN_RETRY_BACKOFF_SECONDS, le=MAX_RETRY_BACKOFF_SECONDS,
        description="Base delay before a retry in seconds (1-86400): doubled each attempt, capped, with a stable per-user jitter; "
                    "null: the settings default.")
    pauseAfter: PauseAfter | None = Field(
        default=None, description=f'Pause the schedule after this many consecutive failed slots ({MIN_PAUSE_AFTER}-{MAX_PAUSE_AFTER}), '
                                  f'or "off" / "never" (never pause); 0 is refused; null: the settings default.')

    @field_validator("retries", "retryBackoffSeconds", mode="before")
    @classmethod
    def _integral_numbers(cls, value: object) -> object:
        return _integral(value)

    @field_validator("pauseAfter", mode="before")
    @classmethod
    def _pause_after(cls, value: object) -> object:
        value = _integral(value)
        if value is None or value in PAUSE_NEVER:
            return value
        if isinstance(value, str | bool):  # JSON text that is not a word for never, true/false
            raise ValueError(f'pause after must be a whole number of failed slots from {MIN_PAUSE_AFTER} to {MAX_PAUSE_AFTER}, '
                             f'or "off", got {value!r}')
        if isinstance(value, int):
            validate_pause_after(value)  # the core rule's message (0 and the range) rather than the union's two
        return value

    @override
    def policy_change(self) -> PolicyChange:
        def asked(name: str, value: object) -> object | None:
            if name not in self.model_fields_set:
                return None
            return USE_DEFAULT if value is None else value

        return PolicyChange(retries=asked("retries", self.retries), retry_backoff=asked("retryBackoffSeconds", self.retryBackoffSeconds),
                            pause_after=asked("pauseAfter", self.pauseAfter))


class CronRequest(BaseModel):
    """No body or `{}`: one dispatch pass. `userId`: run that user now. `mode`: queue or sync."""

    model_config = ConfigDict(extra="forbid", strict=True)

    userId: str | None = Field(default=None, min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=USER_ID_PATTERN)
    mode: Literal["queue", "sync"] | None = Field(
        default=None, description="Default: queue when REDIS_URL is set, else sync."
    )

    @field_validator("userId")
    @classmethod
    def _valid_user_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_user_id(value)  # the pattern's gaps (astral format characters)


# --- responses ------------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    message: str
    errors: list[dict[str, object]] | None = Field(default=None, description="Field errors (validation only).")


NEXT_RUNS_SHOWN = 5


def pause_after_out(value: int | None) -> int | Literal["off"] | None:
    """pauseAfter as the API spells it: "off" for never (stored 0), so a GET can be sent back."""
    return "off" if value == 0 else value


class FailurePolicyOut(BaseModel):
    """What applies when a run fails: the schedule's own values, else the settings defaults."""

    retries: int = Field(description="Attempts after the first within one slot.")
    retryBackoffSeconds: int = Field(description="Base delay before a retry (doubled each attempt, capped, with a per-user jitter).")
    pauseAfter: int | Literal["off"] = Field(description='Consecutive failed slots before the schedule pauses; "off": never.')

    @classmethod
    def of(cls, policy: FailurePolicy) -> FailurePolicyOut:
        pause_after = pause_after_out(policy.pause_after)
        assert pause_after is not None
        return cls(retries=policy.retries, retryBackoffSeconds=policy.backoff_seconds, pauseAfter=pause_after)


class ScheduleOut(BaseModel):
    userId: str
    enabled: bool
    kind: Literal["interval", "cron"] = Field(description="interval: every intervalMinutes; cron: the cron expression in timeZone.")
    intervalMinutes: int
    cron: str | None = Field(description="The calendar schedule's expression (null for an interval schedule).")
    timeZone: str = Field(description="IANA zone the expression is read in.")
    spreadSeconds: int = Field(description="Bound of the calendar schedule's stable per-user start offset.")
    nextRuns: list[datetime] = Field(description=f"The next {NEXT_RUNS_SHOWN} slots (UTC; empty while disabled or paused).")
    nextRunAt: datetime
    lastRunAt: datetime | None
    lastStatus: str | None
    lastError: str | None
    running: bool = Field(description="A run of this user holds a live lease now.")
    state: Literal["idle", "queued", "running"] = Field(
        description="idle: no run leased; queued: a run is leased and waits for a worker; running: a worker started it "
                    "(poll while not idle to follow its progress)."
    )
    runStartedAt: datetime | None = Field(description="When the worker started the current run (null while queued or idle; "
                                                       "once idle, the last run's start).")
    progress: float | None = Field(ge=0, le=1, description="How far the current run is, 0 to 1, as its task last reported "
                                                           "(once idle: the last run's final report; null if it never reported).")
    progressMessage: str | None = Field(description="The task's last progress message (at most 255 characters, no control characters).")
    progressAt: datetime | None = Field(description="When that progress was stored (reports are stored at most every 2 s; the last one with the finish).")
    paused: bool = Field(description="Paused after consecutive failed slots: not run until resumed (POST .../resume). "
                                     "Not the same as disabled.")
    pausedAt: datetime | None = Field(description="Since when it is paused (null while not paused).")
    pausedReason: str | None = Field(description="Why it was paused, with the last error (null while not paused); "
                                                 "the run history keeps it as a run with status \"paused\".")
    failedSlots: int = Field(description="Consecutive slots whose final outcome was a failure (0 after a success or a resume).")
    retries: int | None = Field(description="This schedule's own retries (null: the settings default; see `effective`).")
    retryBackoffSeconds: int | None = Field(description="This schedule's own base retry backoff in seconds (null: the settings default).")
    pauseAfter: int | Literal["off"] | None = Field(description='This schedule\'s own pause threshold in failed slots, "off": never '
                                                                '(null: the settings default).')
    effective: FailurePolicyOut = Field(description="The retries, backoff and pause threshold that apply.")

    @classmethod
    def of(cls, schedule: Schedule, now: datetime, policy: FailurePolicy) -> ScheduleOut:
        """`policy`: the effective one (services.schedules.Schedules.effective_policy)."""
        return cls(
            userId=schedule.user_id,
            enabled=schedule.enabled,
            kind=schedule.kind,
            intervalMinutes=schedule.interval_minutes,
            cron=schedule.cron_expr,
            timeZone=schedule.time_zone,
            spreadSeconds=schedule.spread_seconds,
            nextRuns=[] if schedule.paused else [aware(slot) for slot in upcoming_slots(schedule, now, NEXT_RUNS_SHOWN)],
            nextRunAt=aware(schedule.next_run_at),
            lastRunAt=aware(schedule.last_run_at),
            lastStatus=schedule.last_status,
            lastError=schedule.last_error,
            running=schedule.is_running(now),
            state=schedule.state.value,
            runStartedAt=aware(schedule.run_started_at),
            progress=schedule.progress,
            progressMessage=schedule.progress_message,
            progressAt=aware(schedule.progress_at),
            paused=schedule.paused,
            pausedAt=aware(schedule.paused_at),
            pausedReason=schedule.paused_reason,
            failedSlots=schedule.failed_slots,
            retries=schedule.retries,
            retryBackoffSeconds=schedule.retry_backoff_seconds,
            pauseAfter=pause_after_out(schedule.pause_after),
            effective=FailurePolicyOut.of(policy),
        )


class AdminScheduleOut(ScheduleOut):
    lockedBy: str | None
    lockedUntil: datetime | None
    staleLease: bool = Field(description="A lease that expired without a result (unlock releases it).")

    @classmethod
    @override
    def of(cls, schedule: Schedule, now: datetime, policy: FailurePolicy) -> AdminScheduleOut:
        base = ScheduleOut.of(schedule, now, policy).model_dump()
        return cls(
            **base,
            lockedBy=schedule.locked_by,
            lockedUntil=aware(schedule.locked_until),
            staleLease=schedule.locked_by is not None and not schedule.is_running(now),
        )


class SlotOut(BaseModel):
    at: datetime = Field(description="The slot (UTC).")
    local: str = Field(description="The slot's wall-clock time in the zone, e.g. 2026-03-30T09:00:00+02:00.")
    label: str = Field(description='Short form for people, e.g. "Mon 09:00".')


class PreviewOut(BaseModel):
    timeZone: str
    slots: list[SlotOut]

    @classmethod
    def of(cls, slots: list[datetime], zone: str) -> PreviewOut:
        locals_ = [local_time(slot, zone) for slot in slots]
        return cls(timeZone=zone, slots=[SlotOut(at=aware(slot), local=loc.isoformat(), label=f"{loc:%a %H:%M}")
                                         for slot, loc in zip(slots, locals_)])


class RunOut(BaseModel):
    id: int | None
    trigger: str
    slot: datetime
    attempt: int
    status: str
    error: str | None
    skippedSlots: int
    enqueuedAt: datetime | None
    startedAt: datetime | None
    finishedAt: datetime
    durationMs: int | None
    progressMessage: str | None = Field(description="The run's last progress message.")
    result: JsonValue = Field(description="What the task returned (JSON, at most 4 KB as text); null when it returned nothing "
                                          "or the value was not kept (then `resultNote` says why).")
    resultNote: str | None = Field(description="Why the task's value was not kept (too large, not JSON-serialisable); null otherwise.")

    @classmethod
    def of(cls, run: RunRecord) -> RunOut:
        result, note = split_result(run.result)
        return cls(
            id=run.id, trigger=run.trigger, slot=aware(run.slot), attempt=run.attempt,
            status=run.status, error=run.error, skippedSlots=run.skipped_slots,
            enqueuedAt=aware(run.enqueued_at), startedAt=aware(run.started_at),
            finishedAt=aware(run.finished_at), durationMs=run.duration_ms, progressMessage=run.progress_message,
            result=result, resultNote=note,
        )


class SummaryOut(BaseModel):
    """One dispatch pass or direct run (DispatchSummary)."""

    mode: str
    now: str
    claimed: int
    enqueued: int
    ran: int
    succeeded: int
    failed: int
    released: int
    skipped_backpressure: int
    kept: int = Field(0, description="expired leases whose job still waits in the queue: lease extended, place kept")
    backpressure: bool
    budget_exhausted: bool
    duration_ms: int
    error: str | None


class RunNowOut(BaseModel):
    summary: SummaryOut
    schedule: ScheduleOut


class AdminRunNowOut(BaseModel):
    summary: SummaryOut
    schedule: AdminScheduleOut


class ScheduleListOut(BaseModel):
    items: list[AdminScheduleOut]
    limit: int
    offset: int
    nextOffset: int | None = Field(description="Offset of the next page, null on the last page.")


class UnlockOut(BaseModel):
    unlocked: list[str]
    count: int


class QueueHealthOut(BaseModel):
    mode: Literal["queue", "sync"]
    reachable: bool | None = Field(description="Redis answered (null in sync mode).")
    queueLength: int | None
    workers: int | None
    failedJobs: int | None
    startedJobs: int | None
    error: str | None


class DispatcherStatusOut(BaseModel):
    lastPass: SummaryOut | None = Field(description="Last pass seen by this process (embedded loop or cron endpoint).")
    lastPassAt: datetime | None
    lastRunFinishedAt: datetime | None = Field(description="Newest run in the history, from any process.")
    dueNow: int
    oldestDueAgeSeconds: float | None


class CapacityOut(BaseModel):
    needed: float = Field(description="Runs at once the enabled schedules need: sum over users of average run seconds / interval seconds.")
    available: int | None = Field(description="Runs the live workers execute at once (RQ workers x threads; 1 in sync mode); null when Redis did not answer.")
    due: int = Field(description="Schedules due and not leased (waiting for a dispatch pass).")
    queued: int = Field(description="Runs enqueued and not started by a worker.")
    running: int = Field(description="Runs a worker has started.")
    backlog: int = Field(description="due + queued.")
    averageRunSeconds: float = Field(description="Average duration of the runs finished in CAPACITY_RUN_WINDOW.")
    expectedWaitSeconds: float | None = Field(description="backlog x average run seconds / available; null when no capacity is known.")
    overloaded: bool = Field(description="needed > available now.")
    overloadedSince: datetime | None = Field(description="When the dispatch passes' samples first saw the current overload.")


class OverviewOut(BaseModel):
    queue: QueueHealthOut
    dispatcher: DispatcherStatusOut
    capacity: CapacityOut


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    database: str
    redis: str


class SchedulerHealthOut(BaseModel):
    status: Literal["ok", "unhealthy"]
    problems: list[str] = Field(description="Empty when healthy; else: no dispatch pass within HEALTH_MAX_PASS_AGE, "
                                            "a due user waiting past HEALTH_MAX_DUE_AGE, or the database unreachable")
    lastPassAgeSeconds: float | None = Field(description="Seconds since the last successful dispatch pass (any dispatcher)")
    schedulingLagSeconds: float | None = Field(description="Age of the oldest due schedule; 0 when none waits")
    capacity: CapacityOut | None = Field(description="The capacity figures `check` prints (as in GET /api/admin/overview); "
                                                     "null when the database could not be read")
