"""What a refused upload does to its connection, down to the socket reads."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
READ_BYTES = 64 * 1024  # one socket read: the most the server reads of a body past its limit


class CloseOnRefusal:
    """A request refused for its size (413) ends its connection: uvicorn would otherwise read the rest of an
    oversized body, and throw it away, to keep the connection alive for the next request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def body_capped_protocol(max_body: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, reading at most `READ_BYTES` per socket read and no more of a request body once
    `max_body` bytes of it are in: so a refused body (chunked or not) costs at most its limit plus one read.

    The app's body limit (Starlette's `RequestBodyLimitMiddleware`) decides and answers 413; this only stops the
    reading behind it, which asyncio would otherwise do 256 KiB at a time, and uvicorn ahead of the app. Needs
    uvicorn's asyncio loop (`loop="asyncio"`): uvloop's read size is fixed."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.flow_control import FlowControl

    class HeldFlow(FlowControl):
        held = False  # once a body is past the limit, reading stays paused for the rest of the connection

        def resume_reading(self) -> None:
            if not self.held:
                super().resume_reading()

    class BodyCapped(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            if hasattr(transport, "max_size"):  # asyncio's socket transport: bytes asked of each recv()
                transport.max_size = READ_BYTES
            super().connection_made(transport)
            self.flow = HeldFlow(transport)
            self.body_read, self._counting = 0, None

        def data_received(self, data: bytes) -> None:
            # uvicorn appends each parsed piece of body to the cycle's buffer, which only the app's receive() (a
            # coroutine, so never during this call) drains: the growth is the body this read brought.
            cycle = getattr(self, "cycle", None)
            before = len(cycle.body) if cycle is not None else 0
            super().data_received(data)
            current = getattr(self, "cycle", None)
            if current is None:
                return
            if current is not self._counting:  # a new request on this connection
                self._counting, self.body_read = current, 0
                before = before if current is cycle else 0
            self.body_read += len(current.body) - before
            if self.body_read > max_body and not self.flow.held:
                self.flow.held = True
                self.flow.pause_reading()
                log.warning("A request body passed the %d-byte limit: stopped reading it after %d bytes",
                            max_body, self.body_read)  # fmt: skip

        def on_response_complete(self) -> None:
            if self.flow.held and not self.transport.is_closing():
                self.transport.close()  # the rest of the body is never read; the client has its answer
            super().on_response_complete()

    return BodyCapped
