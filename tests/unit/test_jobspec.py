"""The job functions the dispatcher names by string exist, and take what the dispatcher encodes.

RQ imports a job function by its path when a worker runs the job; a renamed function or a
reordered parameter would otherwise fail only there, at run time.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import to_ms_precision
from core.domain import ClaimedRun, Trigger
from dispatcher.jobspec import PASS_JOB, RUN_JOB, RUN_JOB_PARAMETERS, run_from_job_args, run_job_args


def resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    assert callable(function) and f"{function.__module__}.{function.__qualname__}" == path
    return function


@pytest.mark.parametrize("path", [RUN_JOB, PASS_JOB])
def test_each_named_job_function_imports(path: str) -> None:
    resolve(path)


def test_the_run_job_takes_the_parameters_the_dispatcher_encodes_in_that_order() -> None:
    worker_side = inspect.signature(resolve(RUN_JOB)).parameters
    decoder = inspect.signature(run_from_job_args).parameters
    assert tuple(worker_side) == RUN_JOB_PARAMETERS
    assert [(p.name, p.default) for p in worker_side.values()] == [(p.name, p.default) for p in decoder.values()]


def test_the_pass_job_takes_no_arguments() -> None:
    """rq-scheduler enqueues it without any."""
    assert not inspect.signature(resolve(PASS_JOB)).parameters


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)).map(to_ms_precision)


@given(
    user_id=st.text(min_size=1, max_size=64), slot=moments, attempt=st.integers(min_value=1, max_value=10_000),
    token=st.text(min_size=1, max_size=64), trigger=st.sampled_from(Trigger), claimed_at=moments,
)
def test_a_run_goes_through_the_job_arguments_unchanged(
    user_id: str, slot: datetime, attempt: int, token: str, trigger: Trigger, claimed_at: datetime
) -> None:
    """Bound to the worker function's signature (as RQ calls it) and decoded by name: a reordering
    on either side gives another run."""
    run = ClaimedRun(user_id, slot, attempt, token, trigger, claimed_at)
    bound = inspect.signature(resolve(RUN_JOB)).bind(*run_job_args(run))
    assert run_from_job_args(**bound.arguments) == (run, claimed_at)


def test_a_job_of_an_older_release_without_trigger_and_enqueue_time_still_decodes() -> None:
    slot = datetime(2026, 1, 1, 12, 0)
    run, enqueued_at = run_from_job_args("alice", 1767268800000, 2, "tok")
    assert (run, enqueued_at) == (ClaimedRun("alice", slot, 2, "tok", Trigger.SCHEDULE, slot), None)


def test_a_millisecond_that_a_float_timestamp_rounds_down_survives_the_trip() -> None:
    claimed_at = datetime(2004, 2, 1, 0, 0, 0, 761000)
    run = ClaimedRun("alice", claimed_at, 1, "tok", Trigger.SCHEDULE, claimed_at)
    assert run_from_job_args(*run_job_args(run)) == (run, claimed_at)
