"""A loopback HTTP server for download tests: in-memory files, Range requests and scripted faults.

Faults are queued per path and each request consumes one:
    "drop"          announce the full length, send half the body, close the connection
    "corrupt"       flip one byte of the body
    "ignore_range"  answer a Range request with the whole file (200)
    "error500"      answer 500 Internal Server Error
    "stall"         announce the full length, send half the body, then send nothing for 2 s
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, path: str, data: bytes, faults: list[str] | None = None) -> str:
        """Serve `data` at `path`; returns its URL."""
        self.files[path] = data
        self.faults[path] = list(faults or [])
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                requested = self.headers.get("Range")
                server.requests.append((self.path, requested))
                if self.path not in server.files:
                    self.send_error(404, "no such file")
                    return
                data = server.files[self.path]
                queue = server.faults[self.path]
                fault = queue.pop(0) if queue else None
                if fault == "error500":
                    self.send_error(500, "try again")
                    return
                if fault == "corrupt":
                    data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                start = 0
                match = re.match(r"bytes=(\d+)-$", requested or "")
                if match and fault != "ignore_range":
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416, "range not satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault in ("drop", "stall"):
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        time.sleep(2.0)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler
