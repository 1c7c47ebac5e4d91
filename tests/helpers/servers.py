"""A real HTTP server on loopback for tests: a webhook receiver (import the fixture; S3 is in tests/conftest.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        status = self.server.status
        if self.server.delay:
            time.sleep(self.server.delay)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def webhook_server():
    """A real HTTP server on 127.0.0.1 recording JSON POSTs: ``.url``, ``.received``, ``.status``, ``.delay``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received, server.status, server.delay = [], 200, 0.0
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
