"""What a refused upload does to its connection."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
