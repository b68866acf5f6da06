"""ASGI middleware: the bearer key (``--api-key``) and the request body limit."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import APIError

# --- middleware: auth and body size ---------------------------------------------------------


async def _send_error(send: Send, error: APIError) -> None:
    """Answer a raw ASGI request with an OpenAI error."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-should-retry", b"false"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (latin-1), or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BearerAuth:
    """ASGI middleware: every ``/v1`` request needs ``Authorization: Bearer <key>`` (401 else).

    The key lives only in this object's memory: it is never stored, logged or written.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = (_header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self._expected):
                message = (
                    "Incorrect API key provided."
                    if given
                    else "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
                )
                await _send_error(send, APIError(401, message, code="invalid_api_key"))
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, before it is read.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives, and the app's answer is replaced by the 413 once it runs over.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | None) -> APIError:
        """The 413 error."""
        got = f"{size:,} bytes" if size is not None else f"more than {self.max_bytes:,} bytes"
        return APIError(
            413,
            f"Request body too large: {got}; this server accepts at most "
            f"{self.max_bytes:,} bytes (serve.max_body_bytes).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_error(send, APIError(400, "Invalid Content-Length header."))
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, self._too_large(int(declared)))
                return
        state = {"received": 0, "over": False, "started": False, "replaced": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["replaced"]:
                return
            if message["type"] == "http.response.start":
                if state["over"]:
                    state["replaced"] = True
                    await _send_error(send, self._too_large(None))
                    return
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not state["started"] and not state["replaced"]:
                await _send_error(send, self._too_large(None))


class BodyTooLarge(Exception):
    """Raised while reading a request body that runs over the limit."""
