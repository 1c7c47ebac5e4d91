"""POST a JSON message to a webhook (Slack-compatible ``text`` field), never raising.

Pure Python (urllib): no Lightning, no torch, no extra dependency.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from mlcost_pl.errors import UserInputError

log = logging.getLogger(__name__)


def validate_url(url: str | None, arg: str = "webhook_url") -> str | None:
    """``url`` if it is ``None`` or an http(s) URL.

    Raises:
        ValueError: anything else, naming ``arg``.
    """
    if url is None:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UserInputError(f"{arg} must be an http:// or https:// URL, got {url!r}")
    return url


def post_json(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> bool:
    """POST ``payload`` as JSON; return whether the server answered 2xx. Errors are logged, never raised.

    Example:
        >>> post_json("http://127.0.0.1:9/unreachable", {"text": "hi"}, timeout=0.5)
        False
    """
    try:
        body = json.dumps(dict(payload), default=str).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "mlcost_pl"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the URL is the user's webhook
            ok = 200 <= resp.status < 300
        if not ok:
            log.warning("webhook %s answered HTTP %s", url, resp.status)
        return ok
    except Exception as err:  # noqa: BLE001 - an alert must never crash training
        log.warning("webhook %s failed: %s", url, err)
        return False
