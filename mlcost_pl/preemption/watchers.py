"""Cloud preemption-notice watchers: poll a metadata endpoint from a daemon thread, call back once on a notice.

=========  ===============================================================  ========================================
cloud      endpoint (under ``base_url``)                                    notice
=========  ===============================================================  ========================================
AWS        IMDSv2: ``PUT /latest/api/token``, then                          200 with ``{"action": ..., "time": ...}``
           ``GET /latest/meta-data/spot/instance-action``                   (404 = no notice); ~2 minutes of warning
GCP        ``GET /computeMetadata/v1/instance/preempted``                   body ``TRUE``; ~30 s of warning
           (``Metadata-Flavor: Google``)
Azure      ``GET /metadata/scheduledevents?api-version=2020-07-01``          an event with ``EventType: Preempt``;
           (``Metadata: true``)                                             ~30 s of warning
=========  ===============================================================  ========================================

Unreachable endpoints (not on that cloud) are not notices: the watcher keeps polling and counts ``errors``.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

AWS_BASE_URL = "http://169.254.169.254"
GCP_BASE_URL = "http://metadata.google.internal"
AZURE_BASE_URL = "http://169.254.169.254"


class NoticeWatcher:
    """Base class: ``poll()`` returns a reason string on a notice, else None; ``start()`` polls it every ``interval``.

    Args:
        on_notice: called once, from the watcher thread, with the reason (e.g. ``SignalNotice.set``).
        base_url: metadata server root (override for tests or proxies).
        interval: seconds between polls.
        timeout: seconds per HTTP request.

    Raises:
        ValueError: a non-positive ``interval`` or ``timeout``, or a ``base_url`` that is not http(s).
    """

    name = "base"
    default_base_url = ""

    def __init__(self, on_notice: Callable[[str], None], base_url: str | None = None, interval: float = 5.0, timeout: float = 2.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        base_url = (base_url or self.default_base_url).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.on_notice, self.base_url, self.interval, self.timeout = on_notice, base_url, interval, timeout
        self.errors = 0
        self.polls = 0
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> str | None:
        raise NotImplementedError

    def _request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked in __init__
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read() or b""

    def check(self) -> str | None:
        """One poll; errors (no metadata server here) count in ``errors`` and mean "no notice"."""
        self.polls += 1
        try:
            reason = self.poll()
        except (OSError, ValueError):
            self.errors += 1
            return None
        if reason and self.reason is None:
            self.reason = reason
            self.on_notice(reason)
        return reason

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.check():
                return
            self._stop.wait(self.interval)

    def start(self) -> NoticeWatcher:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"mlcost-{self.name}-notice", daemon=True)
            self._thread.start()
        return self

    def stop(self, join_timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1 if join_timeout is None else join_timeout)
            self._thread = None


class AWSSpotWatcher(NoticeWatcher):
    """AWS EC2 spot interruption notice via IMDSv2 (token, then ``spot/instance-action``; 404 means none)."""

    name = "aws"
    default_base_url = AWS_BASE_URL
    token_ttl_seconds = 21600

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._token: str | None = None

    def _get_token(self) -> str:
        status, body = self._request("/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_seconds)})
        if status != 200:
            raise ValueError(f"IMDSv2 token request returned HTTP {status}")
        return body.decode().strip()

    def poll(self) -> str | None:
        if self._token is None:
            self._token = self._get_token()
        status, body = self._request("/latest/meta-data/spot/instance-action", headers={"X-aws-ec2-metadata-token": self._token})
        if status == 401:  # token expired: fetch a new one next time
            self._token = None
            raise ValueError("IMDSv2 token rejected")
        if status == 404:
            return None
        if status != 200:
            raise ValueError(f"spot/instance-action returned HTTP {status}")
        action = json.loads(body or b"{}")
        return f"aws spot instance-action {action.get('action', '?')} at {action.get('time', '?')}"


class GCPPreemptionWatcher(NoticeWatcher):
    """GCP preemptible/spot VM notice: ``instance/preempted`` turns ``TRUE``."""

    name = "gcp"
    default_base_url = GCP_BASE_URL

    def poll(self) -> str | None:
        status, body = self._request("/computeMetadata/v1/instance/preempted", headers={"Metadata-Flavor": "Google"})
        if status != 200:
            raise ValueError(f"instance/preempted returned HTTP {status}")
        return "gcp instance/preempted TRUE" if body.decode().strip().upper() == "TRUE" else None


class AzureScheduledEventsWatcher(NoticeWatcher):
    """Azure spot VM notice: a Scheduled Event with ``EventType: Preempt``."""

    name = "azure"
    default_base_url = AZURE_BASE_URL

    def poll(self) -> str | None:
        status, body = self._request("/metadata/scheduledevents?api-version=2020-07-01", headers={"Metadata": "true"})
        if status != 200:
            raise ValueError(f"scheduledevents returned HTTP {status}")
        for event in json.loads(body or b"{}").get("Events", []):
            if event.get("EventType") == "Preempt":
                return f"azure scheduled event Preempt {event.get('EventId', '?')} not before {event.get('NotBefore', '?')}"
        return None


WATCHERS: dict[str, type[NoticeWatcher]] = {w.name: w for w in (AWSSpotWatcher, GCPPreemptionWatcher, AzureScheduledEventsWatcher)}


def make_watcher(name: str, on_notice: Callable[[str], None], base_url: str | None = None, interval: float = 5.0) -> NoticeWatcher:
    """Build a watcher by cloud name (``aws``, ``gcp``, ``azure``).

    Raises:
        ValueError: an unknown name.
    """
    if name not in WATCHERS:
        raise ValueError(f"watchers: unknown cloud {name!r}; choose from {sorted(WATCHERS)}")
    return WATCHERS[name](on_notice, base_url=base_url, interval=interval)
