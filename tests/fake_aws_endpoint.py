"""A scripted AWS JSON-protocol endpoint on 127.0.0.1 for what moto cannot do.

moto never throttles, never returns 5xx, and never breaks a connection. This server responds to
each request with the next step of a script (a status and JSON body, a connection reset, or
a body that is not JSON) and records the operation of every request it received.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted response: an HTTP status and a JSON body, or a raw body."""

    status: int = 200
    body: Any = field(default_factory=dict)
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


# Close the connection with a TCP reset instead of a response.
RESET = "reset"


def throttled(message: str = "Rate exceeded") -> Reply:
    return Reply(400, {"__type": "ThrottlingException", "message": message})


def server_error(status: int = 500) -> Reply:
    return Reply(status, {"__type": "InternalServiceError", "message": "internal failure"})


class FakeAwsEndpoint:
    """A loopback HTTP server responding from ``script``, then ``default`` once it is empty."""

    def __init__(self, script: list[Reply | str] | None = None,
                 default: Reply | str | None = None) -> None:
        self.script: list[Reply | str] = list(script or [])
        self.default = default if default is not None else server_error()
        self.operations: list[str] = []
        self.bodies: list[Any] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                target = self.headers.get("X-Amz-Target", "?")
                step = endpoint._next(target.rsplit(".", 1)[-1], body)
                if step == RESET:
                    # SO_LINGER with a zero timeout makes close() send RST, not FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                assert isinstance(step, Reply)
                payload = step.raw if step.raw is not None else json.dumps(step.body).encode()
                self.send_response(step.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _next(self, operation: str, body: bytes) -> Reply | str:
        with self._lock:
            self.operations.append(operation)
            try:
                self.bodies.append(json.loads(body or b"{}"))
            except ValueError:
                self.bodies.append(None)
            return self.script.pop(0) if self.script else self.default

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for name in self.operations if name == operation)

    def __enter__(self) -> "FakeAwsEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
