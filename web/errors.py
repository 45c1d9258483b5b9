"""How the core's errors are worded for whoever asked.

LeaseHeld's own message names the lease token (host name and process id of the worker), which
operators need on the CLI and in the admin views but a user must not see: users are told only
until when the run holds the lease. Operator views (the admin API and pages, the cron endpoint)
mark the request with `mark_operator` once the caller is known to be one.
"""

from __future__ import annotations

from fastapi import Request

from core.exceptions import LeaseHeld

_OPERATOR = "operator_view"


def mark_operator(request: Request) -> None:
    setattr(request.state, _OPERATOR, True)


def is_operator(request: Request) -> bool:
    return getattr(request.state, _OPERATOR, False) is True


def lease_held_text(exc: LeaseHeld, *, operator: bool) -> str:
    if operator:
        return str(exc)
    if exc.queued:
        return "A run is already waiting in the queue; it was not queued a second time."
    if exc.until is None:
        return "A run is already in progress; it was not started a second time."
    return f"A run is already in progress until {exc.until:%Y-%m-%d %H:%M:%S} UTC; it was not started a second time."
