from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from rq.job import JOB_ID_PATTERN

from dispatcher.enqueue import decode_user_id, encode_user_id, job_id_for
from core.domain import ClaimedRun, Trigger

user_ids = st.text(min_size=1, max_size=64)


@given(user_id=user_ids, attempt=st.integers(min_value=1, max_value=10_000))
def test_job_ids_are_valid_for_rq_and_identify_the_run(user_id: str, attempt: int) -> None:
    slot = datetime(2026, 3, 1, 8, 30, 0, 123000)
    run = ClaimedRun(user_id, slot, attempt, "tok", Trigger.SCHEDULE, slot)
    job_id = job_id_for(run)
    assert JOB_ID_PATTERN.fullmatch(job_id)
    assert decode_user_id(job_id.split("-", 3)[3]) == user_id
    other = ClaimedRun(user_id, slot, attempt + 1, "tok", Trigger.SCHEDULE, slot)
    assert job_id_for(other) != job_id, "a retried run gets its own id"


@given(a=user_ids, b=user_ids)
def test_distinct_users_never_share_an_encoding(a: str, b: str) -> None:
    assert (encode_user_id(a) == encode_user_id(b)) == (a == b)
