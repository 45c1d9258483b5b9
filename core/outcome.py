"""What an attempt's outcome does to its slot (issue 17): retry within the slot, the slot's final
outcome, the count of failed slots and the pause. Pure (no I/O): the executor's finish and the
claim that finds a lost run both ask `settle`, and write what it says in the statements they send
anyway (core.fenced.finish_run, core.claims), so deciding costs no round trip.

The rule, in README's words ("When a run fails"):
- a succeeded attempt ends its slot: lastStatus succeeded, failedSlots 0, the next slot;
- a failed or timed-out attempt n is retried while n <= retries (a PermanentError never is): the
  row is due again at now + the backoff's n-th wait, keeping its slot (runSlot) and marked
  `retrying`, so the claim that takes it runs the same slot as attempt n + 1 (core.claims'
  slot/attempt rule); lastStatus is left as it was (it is the last *final* outcome);
- a lost attempt (its lease expired without a result) is a failed attempt too; its retry starts
  at once (the expired lease was its wait) and it has at least one (RetryPolicy.lost_retries);
- a retry that would start at or after the slot that follows is dropped in favour of that slot:
  the slot ends failed and the drop is recorded as a history row of its own (status `dropped`,
  the attempt it would have been, when it would have started and the next slot);
- a slot that ends failed adds one to failedSlots; when that reaches the effective pauseAfter (not
  0), the schedule pauses: paused, pausedAt now, pausedReason "paused after N consecutive failed
  slots; last error: ..." and a history row (status `paused`, error = the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.calendar import ScheduleRule, next_slot
from core.clock import to_ms_precision, utc_text
from core.domain import RunRecord, RunStatus, Trigger
from core.retry import RetryPolicy


@dataclass(frozen=True)
class SlotOutcome:
    """What the finish (or the claim that found a lost run) writes on the schedule."""

    next_run_at: datetime  # the retry's time, or the next slot
    skipped: int  # slots passed without a run (fixed rate), 0 for a retry
    retrying: bool  # the same slot runs again at next_run_at, as the next attempt
    final: RunStatus | None  # the slot's final outcome (lastStatus); None while a retry is pending
    failed_slots: int  # consecutive failed slots, this one included
    paused_reason: str | None = None  # set when this slot pauses the schedule
    dropped_retry_at: datetime | None = None  # a retry dropped because it would start at or after the next slot

    def dropped_note(self, attempt: int) -> str:
        assert self.dropped_retry_at is not None
        return (f"retry dropped: attempt {attempt + 1} would start at {utc_text(self.dropped_retry_at, sep=' ')}, "
                f"at or after the next slot; the schedule moves on to {utc_text(self.next_run_at, sep=' ')}")


def settle(
    *, user_id: str, rule: ScheduleRule, slot: datetime, attempt: int, now: datetime, status: RunStatus, error: str | None,
    policy: RetryPolicy, failed_slots: int, permanent: bool = False,
) -> SlotOutcome:
    """The slot's fate after attempt `attempt` of `slot` ended with `status` (succeeded, failed or
    lost) at `now`; `failed_slots` is the schedule's count before this outcome."""
    nxt = next_slot(rule, slot, now)
    if status is RunStatus.SUCCEEDED:
        return SlotOutcome(nxt.at, nxt.skipped, retrying=False, final=RunStatus.SUCCEEDED, failed_slots=0)
    lost = status is RunStatus.LOST
    dropped = None
    if not permanent and attempt <= (policy.lost_retries if lost else policy.retries):
        if lost:  # its wait was the lease; retried by the claim that found it (never dropped: it runs now)
            return SlotOutcome(now, 0, retrying=True, final=None, failed_slots=failed_slots)
        retry_at = to_ms_precision(now + timedelta(seconds=policy.delay(user_id, attempt)))
        if retry_at < rule.after(slot):
            return SlotOutcome(retry_at, 0, retrying=True, final=None, failed_slots=failed_slots)
        dropped = retry_at
    failed = failed_slots + 1
    reason = None
    if policy.pause_after and failed >= policy.pause_after:
        reason = f"paused after {failed} consecutive failed slots; last error: {error or status.value}"
    return SlotOutcome(nxt.at, nxt.skipped, retrying=False, final=status, failed_slots=failed, paused_reason=reason,
                       dropped_retry_at=dropped)


def paused_record(user_id: str, slot: datetime, attempt: int, reason: str, now: datetime, trigger: str = Trigger.SCHEDULE) -> RunRecord:
    """The history row that keeps why a schedule paused (status `paused`, error = the reason)."""
    return _slot_note(RunStatus.PAUSED, user_id, slot, attempt, reason, now, trigger)


def dropped_record(user_id: str, slot: datetime, attempt: int, note: str, now: datetime, trigger: str = Trigger.SCHEDULE) -> RunRecord:
    """The history row that counts a dropped retry (status `dropped`, attempt = the one it would
    have been, error = when it would have started and where the schedule goes instead)."""
    return _slot_note(RunStatus.DROPPED, user_id, slot, attempt, note, now, trigger)


def _slot_note(status: RunStatus, user_id: str, slot: datetime, attempt: int, text: str, now: datetime, trigger: str) -> RunRecord:
    """A history row that records what happened to a slot, not a run: nothing ran, no lease."""
    return RunRecord(user_id=user_id, trigger=str(trigger), slot=slot, attempt=attempt, lease_token=None, status=status,
                     error=text, skipped_slots=0, enqueued_at=None, started_at=None, finished_at=now, duration_ms=None, worker=None)
