"""What the server refuses before the app sees a request, down to the sockets: too many connections, clients too
slow to send their headers or body, bodies past their limit, requests without the API key; and the log of it,
one line per kind of refusal a second at most.

uvicorn has no bound on open connections that keeps the server answering (its `limit_concurrency` answers 503 to
every new request, health checks included) and no header or body timeout, so they are enforced here, in its HTTP
protocol (`guarded_protocol`). `UVICORN_INTERNALS` lists what that subclass relies on; a test fails when an
upgrade of uvicorn removes any of it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
READ_BYTES = 64 * 1024  # one socket read: the most the server reads of a body past its limit
# Descriptors the server keeps for itself below the file limit: the log, the event loop, the model thread, anonymous
# upload files (about 10 when idle).
RESERVED_FDS = 64
BACKLOG = 128  # connections the kernel queues for accept(), and asyncio accepts in one go

# What `guarded_protocol` uses of uvicorn's HTTP protocols (h11's and httptools'): attributes of the protocol and
# of its request cycle, and the flow control it replaces.
UVICORN_INTERNALS = {
    "protocol": (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_response_complete",
        "transport",
        "cycle",
        "flow",
        "loop",
    ),
    "cycle": ("body", "more_body", "response_complete"),
    "flow_control": ("pause_reading", "resume_reading"),
}


class OncePerSecond(logging.Filter):
    """At most one record a second per message template and logger, the next one saying how many were left out;
    and no traceback for a socket error (one per refused socket is what floods a log under attack)."""

    def __init__(self, every_s: float = 1.0):
        super().__init__()
        self.every_s = every_s
        self.last: dict[tuple[str, object], float] = {}
        self.dropped: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # access logs and the start-up lines pass as they are
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self.last.get(key, -1e9) < self.every_s:
            self.dropped[key] += 1
            return False
        self.last[key] = now
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.msg = f"{record.msg} ({record.exc_info[1]})"
            record.exc_info = record.exc_text = None
        if self.dropped[key]:
            record.msg = f"{record.msg} [and {self.dropped.pop(key)} more like it since the last]"
        return True


def quiet_logs() -> OncePerSecond:
    """Rate-limit the loggers a hostile client can make write: asyncio's (accept errors), uvicorn's (bad requests)
    and this module's refusals."""
    once = OncePerSecond()
    for name in ("asyncio", "uvicorn.error", __name__):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerSecond) for f in logger.filters):  # once per process, however many servers
            logger.addFilter(once)
    return once


def connection_bound(max_connections: int) -> int:
    """`serve.max_connections`, lowered to half of what the process's file limit (`ulimit -n`) leaves after
    `RESERVED_FDS`: past the limit accept() fails and the server can answer no one, and in a burst sockets get their
    descriptors before the bound can shed older ones (asyncio accepts up to `BACKLOG` at a time, several times before
    their protocols start, and a closed socket's descriptor is freed a loop iteration later; docs/serving.md has the
    measurement behind "half")."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, (soft - RESERVED_FDS) // 2))


class CloseOnRefusal:
    """A request refused before its body was wanted (413 too large, 401 without the key) ends its connection:
    uvicorn would otherwise read the rest of the body, and throw it away, to keep the connection alive."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 413):
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class RequireKey:
    """The API key, checked from the request's headers before the app reads a byte of its body: a keyless upload
    costs the server its headers and at most one socket read. The page, its static files, `/v1/health` and the
    schema stay open."""

    OPEN = ("/v1/health",)

    def __init__(self, app: ASGIApp, api_key: str):
        import secrets

        self.app, self.expected, self.compare = app, f"Bearer {api_key}".encode(), secrets.compare_digest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._guarded(scope) and not self._authorised(scope):
            body = b'{"detail":"this server needs its API key: Authorization: Bearer <key>"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path.startswith("/v1/") and path not in self.OPEN

    def _authorised(self, scope: Scope) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return self.compare(given, self.expected)


def guarded_protocol(
    max_body: int, max_connections: int, header_timeout_s: float, body_timeout_s: float
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, guarded:

    - at most `max_connections` open: a new connection past it closes the oldest idle one (no request in
      progress: waiting for headers, or kept alive after a response), so idle sockets can never shut out a health
      check or a real client; when none is idle, the new connection is closed;
    - a request's headers within `header_timeout_s` of the connection (or of the previous response), its body
      within `body_timeout_s` of its headers, or the connection is closed;
    - at most `READ_BYTES` per socket read, and no more of a body once `max_body` bytes of it are in: so a
      refused body (chunked or not) costs at most its limit plus one read. The app's body limit (Starlette's
      `RequestBodyLimitMiddleware`) decides and answers 413; this only stops the reading behind it, which asyncio
      would otherwise do 256 KiB at a time, and uvicorn ahead of the app. Needs uvicorn's asyncio loop
      (`loop="asyncio"`): uvloop's read size is fixed.

    Every refusal is counted in `Guarded.refused` and logged through `OncePerSecond`."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.flow_control import FlowControl

    class HeldFlow(FlowControl):
        held = False  # once a body is past the limit, reading stays paused for the rest of the connection

        def resume_reading(self) -> None:
            if not self.held:
                super().resume_reading()

    class Guarded(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        live: dict[Guarded, None] = {}  # noqa: RUF012 - the server's open connections, oldest first
        refused: Counter = Counter()  # noqa: RUF012 - closed connections by reason

        def connection_made(self, transport) -> None:
            if hasattr(transport, "max_size"):  # asyncio's socket transport: bytes asked of each recv()
                transport.max_size = READ_BYTES
            super().connection_made(transport)
            self.flow = HeldFlow(transport)
            self.body_read, self._counting, self._deadline = 0, None, None
            if len(self.live) >= max_connections:
                oldest_idle = next((c for c in self.live if c.idle), None)
                if oldest_idle is None:
                    self._refuse("busy", "%d connections open, none idle: closed a new one", len(self.live))
                    return
                oldest_idle._refuse("shed", "%d connections open: closed the oldest idle one", len(self.live))
            self.live[self] = None
            self._expect("headers", header_timeout_s)

        @property
        def idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _expect(self, what: str, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._too_slow, what, seconds)

        def _too_slow(self, what: str, seconds: float) -> None:
            self._deadline = None
            if what == "headers" and not self.idle:
                return  # a request is being answered: the next one's deadline starts after it
            self._refuse(f"slow {what}", f"a client sent no complete {what} within %gs: closed it", seconds)

        def _refuse(self, reason: str, message: str, *args) -> None:
            self.refused[reason] += 1
            log.warning(message, *args)
            self.live.pop(self, None)
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            # uvicorn appends each parsed piece of body to the cycle's buffer, which only the app's receive() (a
            # coroutine, so never during this call) drains: the growth is the body this read brought.
            cycle = self.cycle
            before = len(cycle.body) if cycle is not None else 0
            super().data_received(data)
            current = self.cycle
            if current is None:
                return
            if current is not self._counting:  # a new request on this connection: its headers are in
                self._counting, self.body_read = current, 0
                before = before if current is cycle else 0
                if current.more_body:
                    self._expect("body", body_timeout_s)
                elif self._deadline is not None:
                    self._deadline.cancel()
            self.body_read += len(current.body) - before
            if not current.more_body and self._deadline is not None and current is self._counting:
                self._deadline.cancel()
            if self.body_read > max_body and not self.flow.held:
                self.flow.held = True
                self.flow.pause_reading()
                log.warning(
                    "A request body passed the %d-byte limit: stopped reading it after %d bytes",
                    max_body,
                    self.body_read,
                )

        def on_response_complete(self) -> None:
            if self.flow.held and not self.transport.is_closing():
                self.transport.close()  # the rest of the body is never read; the client has its answer
            super().on_response_complete()
            if not self.transport.is_closing():
                self._expect("headers", header_timeout_s)

        def connection_lost(self, exc) -> None:
            self.live.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return Guarded
