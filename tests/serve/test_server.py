"""The server in-process (LitServe's worker process + FastAPI's TestClient): the API, the cache, every bad input's
status and message, load shedding, model errors, /ready /health /metrics and OpenAPI."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from litserve.loops.base import _SENTINEL_VALUE
from litserve.utils import wrap_litserve_start

from mlcost_pl.serve.metrics import parse_metrics
from mlcost_pl.serve.model import ServedModel
from mlcost_pl.serve.server import ModelServer, ServeSettings
from tests.serve.predictors import BOOM, LABELS, SLOW, ScriptedPredictor

SHAPE = (1, 4, 4)


def _wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the worker did not become ready"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client():
    model = ServedModel(predictor=ScriptedPredictor(), version="t1", sample_shape=SHAPE, labels=LABELS, variant="custom")
    server = ModelServer(model, ServeSettings(max_queue=1, max_body_mb=0.01, max_request_samples=4, top_k=2,
                                              usd_per_hour=3.6))
    with serving(server) as c:
        yield c


@contextlib.contextmanager
def serving(server: ModelServer):
    """LitServe's in-process test harness; the workers ignore SIGTERM (they stop only after a drain), so they get
    the sentinel the drain sends them."""
    with wrap_litserve_start(server) as s:
        try:
            with TestClient(s.app) as c:
                _wait_ready(c)
                yield c
        finally:
            queue = s._get_request_queue(s.lit_api.api_path)
            for _ in s.inference_workers:
                queue.put(_SENTINEL_VALUE)
            for p in s.inference_workers:
                p.join(timeout=10)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_json_and_npy_give_logits_probabilities_and_named_top_k(client):
    x = np.full(SHAPE, 0.5, np.float32)
    r = client.post("/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["logits"] == pytest.approx([0.5, 1.0, -0.5]) and sum(body["probabilities"]) == pytest.approx(1, abs=1e-6)
    assert [c["label"] for c in body["classes"]] == ["dog", "cat"]  # top_k=2 by default here
    assert body["model_version"] == "t1" and body["request_id"]
    batch = np.stack([x, 2 * x])
    r = client.post("/predict?top_k=3", content=_npy(batch), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert np.asarray(r.json()["logits"]).shape == (2, 3) and len(r.json()["classes"][1]) == 3
    r = client.post("/predict", json={"inputs": x[0].tolist()})  # (4, 4): the single channel may be left out
    assert r.status_code == 200 and r.json()["logits"] == pytest.approx([0.5, 1.0, -0.5])


def test_repeated_inputs_are_answered_from_the_cache(client):
    x = np.full(SHAPE, 0.25, np.float32)
    first = client.post("/predict", json={"inputs": [x.tolist()]}).json()
    again = client.post("/predict", content=_npy(x[None]), headers={"Content-Type": "application/octet-stream"}).json()
    assert first["cached"] == 0 and again["cached"] == 1 and again["logits"] == first["logits"]
    mixed = client.post("/predict", json={"inputs": [x.tolist(), (x + 1).tolist()]}).json()
    assert mixed["cached"] == 1 and mixed["logits"][0] == first["logits"][0]


@pytest.mark.parametrize(("kwargs", "status", "message"), [
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON body"),
    ({"json": {"input": [1]}}, 422, 'expected an object {"inputs"'),
    ({"json": {"inputs": "abc"}}, 422, "inputs: expected a nested list of numbers, got str"),
    ({"json": {"inputs": [["a", "b"]]}}, 422, "inputs: expected numbers, got strings"),
    ({"json": {"inputs": [[1, 2], [3]]}}, 422, "ragged nested list"),
    ({"json": {"inputs": [[1.0] * 3] * 3}}, 422, "expected one sample of shape (1, 4, 4)"),
    ({"content": b'{"inputs": [[[NaN, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]}',
      "headers": {"Content-Type": "application/json"}}, 422, "sample 0 contains NaN or inf"),
    ({"content": _npy(np.full((1, 4, 4), np.inf)), "headers": {"Content-Type": "application/octet-stream"}}, 422,
     "contains NaN or inf"),
    ({"content": _npy(np.zeros((1, 4, 4), np.complex64)), "headers": {"Content-Type": "application/octet-stream"}},
     422, "expected numbers (a float or integer array), got dtype complex64"),
    ({"content": _npy(np.array([None, 1], dtype=object)), "headers": {"Content-Type": "application/octet-stream"}},
     422, "object arrays are not accepted"),
    ({"content": b"garbage", "headers": {"Content-Type": "application/octet-stream"}}, 400, "not a valid .npy file"),
    ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type 'text/plain' is not supported"),
    ({"json": {"inputs": np.zeros((5, 1, 4, 4)).tolist()}}, 413, "5 samples in one request"),
    ({"content": b"0" * 20000, "headers": {"Content-Type": "application/json"}}, 413, "over serve.max_body_mb=0.01"),
])
def test_bad_input_is_a_4xx_naming_the_problem(client, kwargs, status, message):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"] and r.json()["request_id"]


def test_model_error_is_a_500_with_request_id_and_the_server_keeps_serving(client):
    r = client.post("/predict", json={"inputs": np.full(SHAPE, BOOM).tolist()}, headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500 and r.json()["request_id"] == "req-42" and "req-42" in r.json()["detail"]
    assert client.post("/predict", json={"inputs": np.full(SHAPE, 0.125).tolist()}).status_code == 200


def test_beyond_the_queue_bound_requests_get_503_with_retry_after(client):
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=client.post("/predict", json={"inputs": np.full(SHAPE, SLOW).tolist()})))
    t.start()
    time.sleep(0.2)  # the slow request holds the single slot (max_queue=1)
    r = client.post("/predict", json={"inputs": np.full(SHAPE, 0.375).tolist()})
    t.join()
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "serve.max_queue" in r.json()["detail"]
    assert slow["r"].status_code == 200
    assert client.post("/predict", json={"inputs": np.full(SHAPE, 0.375).tolist()}).status_code == 200


def test_health_ready_metrics_and_openapi(client):
    assert client.get("/health").status_code == 200 and client.get("/ready").text == "ready"
    client.post("/predict", json={"inputs": np.full(SHAPE, 0.0625).tolist()})
    m = parse_metrics(client.get("/metrics").text)
    for name in ("serve_request_seconds_count{code=\"200\"}", "serve_batch_size_count", "serve_queue_depth",
                 "serve_in_flight_requests", "serve_cache_hits_total", "serve_cache_misses_total", "serve_cache_bytes",
                 "serve_predictions_total", "serve_batch_cap", "serve_rejected_total{reason=\"bad_input\"}"):
        assert name in m, name
    usd = m["serve_usd_per_1k_predictions"]
    assert usd == pytest.approx(3.6 / 3600 * m["serve_uptime_seconds"] / m["serve_predictions_total"] * 1000, rel=0.01)
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(content)
    assert "503" in spec["paths"]["/predict"]["post"]["responses"]
    assert client.get("/docs").status_code == 200
