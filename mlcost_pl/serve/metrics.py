"""Serving metrics: the cost figure (pure) and Prometheus metrics in multiprocess mode.

LitServe runs the API server and the inference workers as separate processes, so every process writes its samples
to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` merges them. Call :func:`prepare_multiprocess_dir` in the parent
before any worker starts (and before ``prometheus_client`` is imported).

| metric | type | unit / meaning |
| --- | --- | --- |
| ``serve_request_seconds`` | histogram | request latency, label ``code`` |
| ``serve_batch_size`` | histogram | samples per model call |
| ``serve_batch_seconds`` | histogram | model call latency |
| ``serve_batch_cap`` | gauge | the adaptive controller's current batch cap |
| ``serve_queue_depth`` | gauge | requests waiting for a worker |
| ``serve_in_flight_requests`` | gauge | requests accepted and not yet answered (the HPA's Pods metric) |
| ``serve_cache_hits_total`` / ``serve_cache_misses_total`` | counter | prediction cache lookups, per sample |
| ``serve_cache_bytes`` | gauge | bytes held by the local cache tier |
| ``serve_requests_total`` | counter | ``/predict`` requests accepted (every one gets an answer) |
| ``serve_predictions_total`` | counter | samples answered (cache hits included) |
| ``serve_rejected_total`` | counter | requests refused, label ``reason`` (``overload``, ``bad_input``) |
| ``serve_uptime_seconds`` | gauge | seconds since the server started |
| ``serve_usd_per_1k_predictions`` | gauge | instance price x uptime / predictions x 1000 |
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlcost_pl.errors import UserInputError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def usd_per_1k_predictions(price_per_hour: float, seconds: float, predictions: float) -> float:
    """Dollars per 1,000 predictions for an instance at ``price_per_hour`` that served ``predictions`` in ``seconds``
    (``nan`` before the first prediction).

    Example:
        >>> usd_per_1k_predictions(3.6, 10.0, 2000)  # $0.01 over 2,000 predictions
        0.005
    """
    if price_per_hour < 0 or seconds < 0:
        raise UserInputError(f"price_per_hour and seconds must be >= 0, got {price_per_hour}, {seconds}")
    if predictions <= 0:
        return float("nan")
    return price_per_hour / 3600.0 * seconds / predictions * 1000.0


def prepare_multiprocess_dir(path: str | os.PathLike | None = None) -> str:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at a folder (``path``, the variable's value, or a new temporary folder),
    remove the files of processes that no longer run, and return it. Must run before ``prometheus_client`` is
    imported in this process."""
    folder = Path(path or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="mlcost-serve-prom-"))
    if folder.exists():  # files of processes that are gone (a previous server in this container) would be summed in
        for f in folder.glob("*.db"):
            pid = f.stem.rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                f.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return str(folder)


def process_start_time() -> float:
    """Unix time this process started (Linux ``/proc``; elsewhere: now). The instance is paid from then, model
    loading included, so the cost gauge counts from it."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - start_ticks / ticks)
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return time.time()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServeMetrics:
    """The metric objects of one process (API server or inference worker); ``prometheus_client`` is imported here,
    after :func:`prepare_multiprocess_dir` set the folder."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ or values.ValueClass.__name__ == "MutexValue":
            raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: call "
                               "mlcost_pl.serve.metrics.prepare_multiprocess_dir() first in the parent process")

        self.request_seconds = Histogram("serve_request_seconds", "Request latency in seconds.", ["code"],
                                         buckets=LATENCY_BUCKETS, registry=None)
        self.batch_size = Histogram("serve_batch_size", "Samples per model call.", buckets=BATCH_BUCKETS, registry=None)
        self.batch_seconds = Histogram("serve_batch_seconds", "Model call latency in seconds.", buckets=LATENCY_BUCKETS, registry=None)
        self.batch_cap = Gauge("serve_batch_cap", "Adaptive batch cap (samples).", multiprocess_mode="livemax", registry=None)
        self.queue_depth = Gauge("serve_queue_depth", "Requests waiting for a worker.", multiprocess_mode="livemax", registry=None)
        self.in_flight = Gauge("serve_in_flight_requests", "Requests accepted and not yet answered.",
                               multiprocess_mode="livesum", registry=None)
        self.cache_hits = Counter("serve_cache_hits", "Prediction cache hits (samples).", registry=None)
        self.cache_misses = Counter("serve_cache_misses", "Prediction cache misses (samples).", registry=None)
        self.cache_bytes = Gauge("serve_cache_bytes", "Bytes in the local cache tier.", multiprocess_mode="livesum", registry=None)
        self.requests = Counter("serve_requests", "Prediction requests accepted (read by the server).", registry=None)
        self.predictions = Counter("serve_predictions", "Samples answered, cache hits included.", registry=None)
        self.rejected = Counter("serve_rejected", "Requests refused.", ["reason"], registry=None)


def render(price_per_hour: float, started: float, now: float) -> tuple[bytes, str]:
    """``(body, content_type)`` of ``/metrics``: every process's samples merged, plus uptime and the cost gauge."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    collector = MultiProcessCollector(registry)

    class _Cost:
        def collect(self) -> Any:
            predictions = 0.0
            for family in collector.collect():
                if family.name == "serve_predictions":
                    predictions = sum(s.value for s in family.samples if s.name == "serve_predictions_total")
            uptime = max(0.0, now - started)
            yield GaugeMetricFamily("serve_uptime_seconds", "Seconds since the server started.", value=uptime)
            yield GaugeMetricFamily("serve_price_usd_per_hour", "Instance price used for the cost gauge.",
                                    value=price_per_hour)
            yield GaugeMetricFamily("serve_usd_per_1k_predictions",
                                    "Instance price x uptime / predictions x 1000 (NaN before the first).",
                                    value=usd_per_1k_predictions(price_per_hour, uptime, predictions))

    registry.register(_Cost())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def read_multiprocess_dir(path: str | os.PathLike) -> dict[str, float]:
    """The merged samples of a multiprocess folder (also after the server exited), as :func:`parse_metrics` gives."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return parse_metrics(generate_latest(registry).decode())


def parse_metrics(text: str) -> dict[str, float]:
    """``{sample name with labels: value}`` of a Prometheus text page (for tests and the bench)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
