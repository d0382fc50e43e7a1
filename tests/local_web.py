"""Small HTTP servers on 127.0.0.1 for tests of downloads: no internet needed.

``serve(routes)`` answers GET requests from a table; ``forwarding_proxy()`` is an HTTP
proxy that fetches the absolute URLs it is asked for and records them.

Routes map a path to (content type, body). Two paths misbehave on purpose: ``/stall``
answers nothing for 3 s; ``/trickle`` sends headers, then one byte every 0.1 s for 3 s.
Paths starting with ``/no-length`` are sent without a Content-Length.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/stall":
            time.sleep(3)  # longer than the tests' timeout
            return
        if self.path == "/trickle":  # headers at once, then a byte now and then
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
            return
        if self.path not in self.routes:
            self.send_error(404, "Not Found")
            return
        kind, body = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if not self.path.startswith("/no-length"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on an oversized body, as it should

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(routes: dict[str, tuple[str, bytes]]) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 while the with-block runs; yields the base URL."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def forwarding_proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy on 127.0.0.1 that forwards GETs of absolute URLs; yields (proxy URL, URLs requested)."""
    requested: list[str] = []
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requested.append(self.path)
            with direct.open(self.path, timeout=10) as upstream:
                kind, body = upstream.headers.get("Content-Type", "application/octet-stream"), upstream.read()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
