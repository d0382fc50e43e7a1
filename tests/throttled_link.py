"""A slow network link for tests: a TCP proxy on 127.0.0.1 that limits bandwidth and adds delay.

Between the browser and the Jupyter server it makes localhost look like a remote kernel
(Colab, JupyterHub): every byte, WebSocket frames included, queues behind the bytes sent
before it at ``down_bps`` (server → browser) or ``up_bps`` (browser → server), then
arrives half a round trip later. Chromium's own emulation (DevTools
``Network.emulateNetworkConditions``) was measured here and does not model WebSocket
traffic faithfully: a 1 MiB frame took 1.24 s at a nominal 20 Mbit/s (0.42 s expected)
while small frames came back in 4–34 ms despite 40 ms of latency.

``throttled`` can be switched at any time and applies to open connections too, so a
test can load JupyterLab at full speed and throttle only what it measures.
"""

from __future__ import annotations

import asyncio
import socket
import threading


class _Direction:
    """One direction of the link: bytes leave one after the other at ``bps``, shared by all connections."""

    def __init__(self, bps: float) -> None:
        self.bps = bps
        self.busy_until = 0.0
        self.bytes = 0

    def arrival(self, now: float, size: int, one_way_s: float) -> float:
        start = max(now, self.busy_until)
        self.busy_until = start + size * 8 / self.bps
        self.bytes += size
        return self.busy_until + one_way_s


class ThrottledLink:
    """``with ThrottledLink(target_port) as link:`` then connect to ``link.port``; set ``link.throttled``."""

    CHUNK = 16 * 1024

    def __init__(self, target_port: int, down_bps: float = 20e6, up_bps: float = 5e6,
                 rtt_s: float = 0.040) -> None:
        self.target_port = target_port
        self.down, self.up = _Direction(down_bps), _Direction(up_bps)
        self.one_way_s = rtt_s / 2
        self.throttled = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def __enter__(self) -> "ThrottledLink":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, sock=listener), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _connection(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, server_writer, self.up),
                             self._pipe(server_reader, client_writer, self.down),
                             return_exceptions=True)

    async def _pipe(self, reader, writer, direction: _Direction) -> None:
        """Copy reader → writer; each chunk is written when the emulated link delivers it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(self.CHUNK):
                now = loop.time()
                due = direction.arrival(now, len(chunk), self.one_way_s) if self.throttled else now
                queue.put_nowait((due, chunk))
            queue.put_nowait((0.0, None))
            await sender
        finally:
            sender.cancel()
            writer.close()
