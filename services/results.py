"""A run's stored result as people and the API read it (UserMonitorRun.result: the JSON text a task
returned, or a note saying why its value was not kept)."""

from __future__ import annotations

import json

from pydantic import JsonValue


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")  # NaN and Infinity: Python's extension, no JSON body can carry it


def split_result(stored: str | None) -> tuple[JsonValue, str | None]:
    """(the value, None) for stored JSON; (None, the note) for text that is not JSON (a note, or a
    row written by hand); (None, None) when the run stored nothing."""
    if stored is None:
        return None, None
    try:
        value: JsonValue = json.loads(stored, parse_constant=_not_json)
    except ValueError:
        return None, stored
    return value, None
