"""The HTTP stack of streamml's web surfaces: ASGI apps on uvicorn (the console is a Starlette app,
the inference server a bare ASGI app, see ``services/serve/server.py``).

One event loop (uvloop) parses with httptools; a connection costs a
coroutine, not a thread, so slow or idle clients hold no worker. Limits hold
whatever a client sends: a request head that does not arrive within
``head_timeout_s`` closes the connection, a body is read against a byte
limit (``Content-Length`` or chunked alike) and a time limit, and at most
``max_connections`` are served at once. A handler's unexpected error is
logged with its traceback and answered 500 with no detail::

    server = WebServer(app, "127.0.0.1", 0)    # binds now: OSError names a port in use
    server.start()
    ...
    server.stop()                               # finishes running requests (grace_s), then returns
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("streamml.web")
INTERNAL_ERROR = {"error": "internal error; the server's log has the details"}


class HTTPError(Exception):
    """An answer other than 200: its status and a message that says what to change."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close  # the rest of the request is unread: the connection cannot be reused


async def read_body(receive: Callable[[], Awaitable[dict]], declared: str | None, max_bytes: int,
                    timeout_s: float) -> bytes:
    """The body of a request (its ASGI ``receive`` and declared ``Content-Length``), refused with
    413 past ``max_bytes`` and 408 past ``timeout_s``."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPError(413, f"body of {declared} bytes exceeds the limit of {max_bytes}", close=True)
    chunks, size, more = [], 0, True
    try:
        async with asyncio.timeout(timeout_s):
            while more:  # ASGI messages, as they arrive; what Request.stream() does, without its generator
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HTTPError(400, "the client went away before its body arrived", close=True)
                chunk, more = message.get("body", b""), message.get("more_body", False)
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPError(413, f"body exceeds the limit of {max_bytes} bytes", close=True)
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(408, f"the body did not arrive within {timeout_s:g}s", close=True) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """``body`` as JSON; None when empty; HTTPError 400 naming the problem otherwise."""
    if not body:
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise HTTPError(400, f"body is not JSON: {error}") from None


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is late.

    uvicorn's keep-alive timer stops at a request's first byte, so a client
    sending its head a byte at a time would hold the connection for ever."""

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def on_headers_complete(self) -> None:
        self._head_timer.cancel()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_timer.cancel()
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def _head_late(self) -> None:
        waiting_for_a_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_a_head and not self.transport.is_closing():
            self.transport.close()


class WebServer:
    """An ASGI app served by uvicorn in a background thread."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        head_timeout_s: float = 10.0,
        keep_alive_s: int = 5,
        max_connections: int = 1000,
        grace_s: int = 10,
    ) -> None:
        self._socket = socket.create_server((host, port), backlog=2048)
        self.port = self._socket.getsockname()[1]
        self.grace_s = grace_s
        protocol = type("Protocol", (_Protocol,), {"head_timeout_s": head_timeout_s})
        config = uvicorn.Config(
            app, loop="uvloop", http=protocol, lifespan="off", log_config=None, access_log=False,
            timeout_keep_alive=keep_alive_s, limit_concurrency=max_connections, timeout_graceful_shutdown=grace_s,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"http-{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server on port {self.port} did not start; see the log")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop accepting, let running requests finish (at most ``grace_s``), close the connections."""
        self._server.should_exit = True
        self._thread.join(self.grace_s + 5)
        self._socket.close()
