"""HEAD on every GET route: the request goes to the app as GET and the body of the answer is dropped.

FastAPI routes answer only the methods they declare, so without this every HEAD was a 405 (and
monitoring probes use HEAD). The headers, Content-Length included, are those GET would send.
The original method is kept in the scope under HEAD_SCOPE_KEY for a route whose GET has an
effect (a one-time sign-in link must not be used up by a link scanner's HEAD).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_SCOPE_KEY = "monitor_scheduler.head"


def is_head(scope: Scope) -> bool:
    return scope.get(HEAD_SCOPE_KEY) is True


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server's own scope still says HEAD, so it sends no body either.
        await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive, send_headers_only)
