"""Bounded work per request: a body size limit and a concurrency limit, as ASGI middleware.

* :class:`BodyLimit` refuses a request whose ``Content-Length`` is over the limit before a
  byte of its body is read (413), and counts the bytes of a streamed (chunked) body as they
  arrive, refusing it as soon as the count passes the limit. Nothing else runs for such a
  request: no routing, no auth, no JSON parsing. Like nginx's lingering close, a declared
  body of up to ``linger_bytes`` is then read and thrown away by the server (so a client
  that sends it all before reading still gets its 413 instead of a connection reset), and
  the rest of a streamed one is read and thrown away (at most ``linger_bytes`` or
  ``linger_seconds``) before its 413; beyond that the connection is closed.
* :class:`ConcurrencyLimit` lets at most ``max_active`` requests run at once; up to
  ``max_queue`` more wait, each at most ``queue_timeout`` seconds; every other one is answered
  503 with ``Retry-After`` at once, so the server sheds load instead of queueing without
  bound (admitted requests wait at most ``queue_timeout`` for their turn). Cheap operational
  routes (``/health``, ``/metrics``) are exempt so probes keep working under overload.

Both answer with the service's error body (:class:`~shoprec.serve.schemas.ErrorOut`).

Example:
    >>> from starlette.applications import Starlette
    >>> app = BodyLimit(ConcurrencyLimit(Starlette(), max_active=4), max_bytes=1_000_000)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoprec.serve.schemas import ERROR_CODES


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (answered 413; ``close``:
    the rest of the body was not read, so the connection is closed)."""

    def __init__(self, limit: int, close: bool = True) -> None:
        super().__init__(
            413,
            f"the request body is larger than the limit of {limit:,} bytes",
            headers={"Connection": "close"} if close else None,
        )


def error_body(status: int, detail: str) -> bytes:
    """The JSON of :class:`~shoprec.serve.schemas.ErrorOut` for ``status``."""
    body = {"status": status, "error": ERROR_CODES.get(status, "error"), "detail": detail}
    return json.dumps({**body, "errors": []}).encode()


async def send_error(
    send: Send,
    status: int,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    close: bool = True,
) -> None:
    """Answer ``status`` with the error body; ``close``: close the connection after it (the
    request's body, if any, is left unread)."""
    body = error_body(status, detail)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: request bodies of at most ``max_bytes`` (see the module docstring).

    Args:
        app: the wrapped app.
        max_bytes: the largest body accepted, in bytes.
        linger_bytes: a refused body declared up to this size is read and discarded after
            the 413 (a larger one closes the connection); a streamed one is read and
            discarded up to this size or ``linger_seconds`` before the 413.
        linger_seconds: the longest time spent discarding a streamed body.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = 1_000_000,
        linger_bytes: int = 64 * 2**20,
        linger_seconds: float = 1.0,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.app = app
        self.max_bytes = max_bytes
        self.linger_bytes = linger_bytes
        self.linger_seconds = linger_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, f"Content-Length {length[:40]!r} is not a number")
                return
            if int(length) > self.max_bytes:
                await send_error(
                    send,
                    413,
                    f"the request body ({int(length):,} bytes) is larger than the limit of "
                    f"{self.max_bytes:,} bytes",
                    close=int(length) > self.linger_bytes,
                )
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    ended = await self._drain(receive, message)
                    raise BodyTooLarge(self.max_bytes, close=not ended)
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive, message: Message) -> bool:
        """Read and discard the rest of a streamed body over the limit, at most
        ``linger_bytes`` or ``linger_seconds``; whether it ended (then the connection can
        stay open, and the client, done sending, reads its 413 instead of a reset)."""
        drained, deadline = 0, time.monotonic() + self.linger_seconds
        while message.get("more_body", False):
            left = deadline - time.monotonic()
            if drained > self.linger_bytes or left <= 0:
                return False
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return False
            if message["type"] != "http.request":
                return False
            drained += len(message.get("body", b""))
        return True


class ConcurrencyLimit:
    """ASGI middleware: bounded concurrency with a short, bounded wait (module docstring).

    Args:
        app: the wrapped app.
        max_active: requests running at once.
        max_queue: requests waiting for a turn; one more is shed at once.
        queue_timeout: the longest wait for a turn, in seconds; then it is shed.
        retry_after: the ``Retry-After`` header of a shed request, in whole seconds.
        exempt: paths never limited (health checks, metrics scrapes).
        on_shed: called with the path of every shed request (to count them).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_active: int = 4,
        max_queue: int = 32,
        queue_timeout: float = 0.05,
        retry_after: int = 1,
        exempt: Iterable[str] = ("/health", "/metrics"),
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        if max_active < 1 or max_queue < 0 or queue_timeout < 0:
            raise ValueError("max_active >= 1, max_queue >= 0 and queue_timeout >= 0, please")
        self.app = app
        self.max_active = max_active
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self.exempt = frozenset(exempt)
        self.on_shed = on_shed
        self.active = 0
        self.waiting = 0
        self._turn: asyncio.Semaphore | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self._turn is None:
            self._turn = asyncio.Semaphore(self.max_active)
        turn = self._turn
        if turn.locked():
            if self.waiting >= self.max_queue:
                await self._shed(scope, send, "the server is at capacity")
                return
            self.waiting += 1
            try:
                await asyncio.wait_for(turn.acquire(), self.queue_timeout)
            except TimeoutError:
                await self._shed(scope, send, "no turn came within the queue timeout")
                return
            finally:
                self.waiting -= 1
        else:
            await turn.acquire()
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            turn.release()

    async def _shed(self, scope: Scope, send: Send, why: str) -> None:
        if self.on_shed is not None:
            self.on_shed(scope["path"])
        await send_error(
            send,
            503,
            f"{why} ({self.max_active} requests running, {self.waiting} waiting): retry after "
            f"{self.retry_after} s",
            [(b"retry-after", str(self.retry_after).encode())],
            close=_header(scope, b"transfer-encoding") is not None,  # else discarded
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


class RateLimit:
    """At most ``per_minute`` events per client in any 60 s window (a sliding log per client,
    at most ``clients`` clients remembered; the oldest is forgotten first).

    Example:
        >>> r = RateLimit(2)
        >>> r.retry_after("a", now=0.0), r.retry_after("a", now=1.0), r.retry_after("a", now=2.0)
        (None, None, 58)
    """

    def __init__(self, per_minute: int, clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.clients = clients
        self._log: dict[str, list[float]] = {}

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """None (and the event is counted) if ``client`` may go on, else the whole seconds
        until it may."""
        now = time.monotonic() if now is None else now
        times = [t for t in self._log.pop(client, []) if t > now - 60.0]
        if len(times) >= self.per_minute:
            self._log[client] = times
            return max(1, math.ceil(times[0] + 60.0 - now))
        times.append(now)
        self._log[client] = times  # re-inserted: the dict stays ordered by last use
        while len(self._log) > self.clients:
            del self._log[next(iter(self._log))]
        return None
