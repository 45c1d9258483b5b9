"""A cap on request bodies: a declared Content-Length over the cap is refused before anything is
read, and a body without one (chunked) is counted as it arrives and refused once past the cap, so
a huge body never sits in memory. Every body this app takes is a small JSON object or form.

The stream overflow is raised as an HTTPException(413) from `receive`, inside the app, so the
app's error handlers render it (JSON under /api, HTML elsewhere); FastAPI re-raises an
HTTPException met while reading a form instead of turning it into a 400.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
"""Far above any JSON body or form post the app takes (the largest is a few hundred bytes)."""


def too_large_message(max_bytes: int) -> str:
    return f"request body too large: at most {max_bytes} bytes"


class BodySizeLimit:
    """`refuse(scope, status, message)` builds the answer given before the app is called."""

    def __init__(self, app: ASGIApp, *, refuse: Callable[[Scope, int, str], Response], max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.refuse = refuse
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None or declared > self.max_bytes:
            status, message = (400, "invalid Content-Length header") if declared is None else (413, too_large_message(self.max_bytes))
            await self.refuse(scope, status, message)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, 0 when none is declared, None when the header is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return 0
