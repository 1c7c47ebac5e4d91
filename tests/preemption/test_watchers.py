"""Cloud notice watchers against real HTTP metadata servers on 127.0.0.1 that speak each cloud's protocol."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlcost_pl.preemption.signals import SignalNotice
from mlcost_pl.preemption.watchers import AWSSpotWatcher, AzureScheduledEventsWatcher, GCPPreemptionWatcher, make_watcher


class FakeMetadata(BaseHTTPRequestHandler):
    """One handler for the three clouds; ``server.notice`` switches the notice on; ``server.log`` records requests."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: str | bytes = b"") -> None:
        body = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):  # noqa: N802
        self.server.log.append(("PUT", self.path))
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self._send(200, "tok-123")
        return self._send(400)

    def do_GET(self):  # noqa: N802
        self.server.log.append(("GET", self.path))
        notice = self.server.notice
        if self.path == "/latest/meta-data/spot/instance-action":
            if self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
                return self._send(401)
            if not notice:
                return self._send(404, "Not Found")
            return self._send(200, json.dumps({"action": "terminate", "time": "2026-11-29T12:00:00Z"}))
        if self.path == "/computeMetadata/v1/instance/preempted":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._send(403)
            return self._send(200, "TRUE" if notice else "FALSE")
        if self.path == "/metadata/scheduledevents?api-version=2020-07-01":
            if self.headers.get("Metadata") != "true":
                return self._send(400)
            events = [{"EventId": "E1", "EventType": "Reboot", "NotBefore": "later"}]
            if notice:
                events.append({"EventId": "E2", "EventType": "Preempt", "ResourceType": "VirtualMachine", "NotBefore": "soon"})
            return self._send(200, json.dumps({"DocumentIncarnation": 2, "Events": events}))
        return self._send(404)


@pytest.fixture
def metadata_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMetadata)
    server.notice, server.log = False, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize(
    ("cls", "expect"),
    [(AWSSpotWatcher, "aws spot instance-action terminate"), (GCPPreemptionWatcher, "gcp instance/preempted TRUE"),
     (AzureScheduledEventsWatcher, "azure scheduled event Preempt E2")],
)
def test_watcher_thread_turns_notice_into_signal_notice(metadata_server, cls, expect):
    notice = SignalNotice([])
    url = f"http://127.0.0.1:{metadata_server.server_address[1]}"
    watcher = cls(notice.set, base_url=url, interval=0.05).start()
    try:
        assert _wait(lambda: watcher.polls >= 3)
        assert not notice.is_set() and watcher.errors == 0  # no notice yet: 404 / FALSE / only a Reboot event
        metadata_server.notice = True
        assert _wait(notice.is_set)
        assert notice.reason.startswith(expect)
        assert _wait(lambda: watcher._thread is None or not watcher._thread.is_alive())  # stops after the notice
    finally:
        watcher.stop()
    if cls is AWSSpotWatcher:  # IMDSv2: one token PUT, reused by every GET
        assert [m for m, _ in metadata_server.log].count("PUT") == 1


def test_unreachable_endpoint_is_not_a_notice():
    notice = SignalNotice([])
    watcher = make_watcher("gcp", notice.set, base_url="http://127.0.0.1:9", interval=0.05)
    assert watcher.check() is None and watcher.errors == 1 and not notice.is_set()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown cloud 'ibm'"):
        make_watcher("ibm", print)
    with pytest.raises(ValueError, match="interval"):
        AWSSpotWatcher(print, interval=0)
    with pytest.raises(ValueError, match="base_url"):
        GCPPreemptionWatcher(print, base_url="ftp://x")
