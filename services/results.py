"""A run's stored result as people and the API read it (UserMonitorRun.result: the JSON text a task
returned, or a note saying why its value was not kept)."""

from __future__ import annotations

from typing import cast

from pydantic import JsonValue

from core.tasks import decode_result


def split_result(stored: str | None) -> tuple[JsonValue, str | None]:
    """(the value, None) for stored JSON; (None, the note) for a note or text that is not JSON (a
    row written by hand); (None, None) when the run stored nothing: core.tasks.decode_result, the
    one reader, typed for the API's models."""
    value, note = decode_result(stored)
    return cast(JsonValue, value), note
