"""Anomaly checks against the history of similar runs, and the webhook POST to a real local HTTP server."""

from __future__ import annotations

import pytest

from mlcost_pl.cost import Baseline, baseline, check, post_json
from mlcost_pl.cost.webhook import validate_url
from tests.helpers.servers import webhook_server  # noqa: F401 - fixture


def test_baseline_averages_finished_runs_only():
    rows = [
        {"status": "finished", "usd_per_step": 0.1, "usd_total": 10.0},
        {"status": "finished", "usd_per_step": 0.3, "usd_total": None},
        {"status": "failed", "usd_per_step": 9.0, "usd_total": 900.0},
        {"status": "running", "usd_per_step": 9.0, "usd_total": 900.0},
    ]
    base = baseline(rows)
    assert base.runs == 2 and base.usd_per_step == pytest.approx(0.2) and base.usd_total == pytest.approx(10.0)


def test_check_flags_figures_over_k_times_the_average():
    base = Baseline(runs=3, usd_per_step=0.1, usd_total=10.0)
    assert check(base, {"usd_per_step": 0.19, "usd_projected": 19.0}, k=2.0) == []
    found = check(base, {"usd_per_step": 0.21, "usd_projected": 25.0}, k=2.0)
    assert [a.metric for a in found] == ["usd_per_step", "usd_projected"]
    assert found[1].ratio == pytest.approx(2.5) and "2.50x" in found[1].message() and "3 similar" in found[1].message()
    assert check(base, {"usd_per_step": 1.0}, k=2.0, min_runs=4) == []  # not enough history
    assert check(Baseline(0, None, None), {"usd_per_step": 1.0}, k=2.0) == []
    with pytest.raises(ValueError, match="k must be > 0"):
        check(base, {}, k=0)


def test_webhook_posts_json(webhook_server):
    assert post_json(webhook_server.url, {"text": "hello", "value": 1.5})
    (got,) = webhook_server.received
    assert got["json"] == {"text": "hello", "value": 1.5} and got["headers"]["Content-Type"] == "application/json"


def test_webhook_failures_never_raise(webhook_server, caplog):
    webhook_server.status = 500
    assert post_json(webhook_server.url, {"text": "x"}) is False
    webhook_server.status, webhook_server.delay = 200, 1.0
    assert post_json(webhook_server.url, {"text": "slow"}, timeout=0.2) is False  # timed out
    assert post_json("http://127.0.0.1:9/closed", {"text": "x"}, timeout=1.0) is False
    assert post_json(webhook_server.url, {"bad": object()}) is True  # non-JSON values are stringified
    assert "failed" in caplog.text


def test_webhook_url_is_validated():
    assert validate_url(None) is None
    with pytest.raises(ValueError, match="webhook_url"):
        validate_url("ftp://example.com/hook")
