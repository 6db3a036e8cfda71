"""A loopback TCP proxy that can make what stands behind it go away for a while.

    with FaultProxy(upstream_port) as proxy:      # clients talk to proxy.port
        proxy.fail("refuse")                      # every connection is cut, new ones are closed at once
        proxy.fail("http503")                     # ...or answered 503 SlowDown, as a busy S3 gateway does
        proxy.heal()                              # traffic passes again
        held = proxy.hold(b"PUT ", b"/records/")  # requests whose first line has both never go on;
        held.wait()                               # ...set once one was held; heal() stops holding

Failing cuts the connections that are open, so a client's pooled keep-alive
connection cannot slip past the outage.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Literal

from streamml.stack import procs
from streamml.stack.ports import free_port, wait_for_port
from streamml.stack.tansu import tansu_binary

Mode = Literal["pass", "refuse", "http503"]

_BODY = b"<Error><Code>SlowDown</Code><Message>an outage injected by the test</Message></Error>"
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.upstream_port = host, upstream_port
        self.mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._hold: tuple[bytes, bytes] | None = None
        self.held = threading.Event()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    def fail(self, mode: Mode) -> None:
        self._loop.call_soon_threadsafe(self._set_mode, mode)

    def heal(self) -> None:
        self._hold = None
        self._loop.call_soon_threadsafe(self._set_mode, "pass")

    def hold(self, method: bytes, path_part: bytes) -> threading.Event:
        """Stall, from now on, each request sent upstream whose request line starts
        with ``method`` and holds ``path_part``: as if the process behind never got it."""
        self.held.clear()
        self._hold = (method, path_part)
        return self.held

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "pass":
            for writer in list(self._writers):
                writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        if self.mode == "http503":
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(SLOW_DOWN)
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer, requests=True),
                             self._pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    requests: bool = False) -> None:
        try:
            while data := await reader.read(1 << 16):
                if requests and self._hold and self._holds(data):
                    self.held.set()
                    await asyncio.Event().wait()  # until close() cancels it
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def _holds(self, data: bytes) -> bool:
        assert self._hold is not None
        method, path_part = self._hold
        return data.startswith(method) and path_part in data.split(b"\r\n", 1)[0]

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            piping = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in piping:
                task.cancel()
            await asyncio.gather(*piping, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def broker_behind_proxy(root: Path) -> tuple[int, FaultProxy]:
    """A Tansu broker that tells clients to connect through a proxy in front of it."""
    port = free_port()
    proxy = FaultProxy(port)
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
    pid = procs.spawn([str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                       "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}",
                       "--storage-engine", "memory://tansu/"],
                      log_path=root / "tansu.log", pid_path=root / "tansu.pid", env=env, cwd=root)
    wait_for_port("127.0.0.1", port, 20)
    return pid, proxy
