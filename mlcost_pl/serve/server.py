"""The LitServe adapter: a ``LitAPI`` around the predictor, an adaptive batching loop (subclassing LitServe's
``BatchedLoop``), and a ``LitServer`` with the cache, load shedding, metrics, ``/ready`` and a SIGTERM drain.

The policies live in pure modules (:mod:`~mlcost_pl.serve.batching`, :mod:`~mlcost_pl.serve.cache`,
:mod:`~mlcost_pl.serve.decode`, :mod:`~mlcost_pl.serve.metrics`); this module only wires them into LitServe.
Importing it does not import torch.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from queue import Empty
from typing import Any

import litserve as ls
import numpy as np
from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem, WorkerSetupStatus
from pydantic import BaseModel

from mlcost_pl.errors import UserInputError
from mlcost_pl.serve.batching import AIMDBatchController
from mlcost_pl.serve.cache import PredictionCache, build_cache, tensor_digest
from mlcost_pl.serve.decode import BadInput, decode_body, format_outputs
from mlcost_pl.serve.metrics import ServeMetrics, prepare_multiprocess_dir, process_start_time, render
from mlcost_pl.serve.model import ServedModel

log = logging.getLogger(__name__)

BATCHING = ("adaptive", "static", "none")
SHUTDOWN_RESERVE_S = 3.0  # of serve.drain_seconds, kept for stopping the workers and LitServe's own shutdown


@dataclass
class ServeSettings:
    """The server's options (``serve.*`` in ``configs/serve.yaml``).

    Attributes:
        batching: ``adaptive`` (our AIMD controller), ``static`` (LitServe's fixed ``max_batch_size`` +
            ``batch_timeout``) or ``none`` (batch 1).
        slo_ms: request latency budget (p99) the adaptive controller keeps batches inside.
        max_batch_size: the largest batch (samples) for ``adaptive`` and ``static``.
        batch_timeout: LitServe's wait for a partial batch (``static`` only).
        max_queue: requests accepted and not yet answered beyond which new ones get 503 + ``Retry-After``.
        retry_after_s: the ``Retry-After`` header of those 503s.
        max_body_mb: the largest request body (413 beyond).
        max_request_samples: the most samples in one request (413 beyond).
        top_k: classes returned per sample (``?top_k=`` overrides per request).
        drain_seconds: on SIGTERM, the process exits within this many seconds.
        ready_grace_s: after SIGTERM, ``/ready`` answers 503 for this long before the listener closes.
        workers: inference worker processes.
        api_servers: uvicorn processes.
        instance / market / usd_per_hour: the price of the machine for ``serve_usd_per_1k_predictions``.
        cache: ``{"enabled", "max_entries", "max_mb", "ttl_s", "url"}`` (``url``: a Redis URL for the shared tier).
    """

    batching: str = "adaptive"
    slo_ms: float = 50.0
    max_batch_size: int = 32
    batch_timeout: float = 0.01
    max_queue: int = 256
    retry_after_s: int = 1
    max_body_mb: float = 8.0
    max_request_samples: int = 256
    top_k: int = 5
    drain_seconds: float = 30.0
    ready_grace_s: float = 1.0
    workers: int = 1
    api_servers: int = 1
    instance: str = "custom"
    market: str = "on_demand"
    usd_per_hour: float | None = 0.0832
    cache: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.batching not in BATCHING:
            raise UserInputError(f"serve.batching must be one of {BATCHING}, got {self.batching!r}")
        for key in ("max_batch_size", "max_queue", "max_request_samples", "top_k", "workers", "api_servers"):
            if int(getattr(self, key)) < 1:
                raise UserInputError(f"serve.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("slo_ms", "max_body_mb", "drain_seconds"):
            if not float(getattr(self, key)) > 0:
                raise UserInputError(f"serve.{key} must be > 0, got {getattr(self, key)}")
        if self.batch_timeout < 0 or self.ready_grace_s < 0 or self.retry_after_s < 0:
            raise UserInputError("serve.batch_timeout, serve.ready_grace_s and serve.retry_after_s must be >= 0")
        if self.ready_grace_s + SHUTDOWN_RESERVE_S + 1 > self.drain_seconds:
            raise UserInputError(f"serve.drain_seconds ({self.drain_seconds}) must be >= serve.ready_grace_s "
                             f"({self.ready_grace_s}) + {SHUTDOWN_RESERVE_S + 1:g} s")
        self.cache = dict(self.cache or {"enabled": True})

    def price_per_hour(self) -> float:
        """USD per hour of the serving machine, from the price catalog (``instance``, ``market``)."""
        from mlcost_pl.cost import resolve_instance

        if self.market not in ("on_demand", "spot"):
            raise UserInputError(f"serve.market must be 'on_demand' or 'spot', got {self.market!r}")
        entry = resolve_instance(self.instance, usd_per_hour=self.usd_per_hour if self.instance == "custom" else None)
        price = entry.price(self.market)
        if price is None:
            raise UserInputError(f"serve.instance={self.instance!r} has no {self.market} price in the catalog")
        return float(price)


class AdaptiveBatchingLoop(BatchedLoop):
    """LitServe's ``BatchedLoop`` with the batch collected by :class:`AIMDBatchController`: dispatch at once
    whatever is queued (no ``batch_timeout`` wait), up to the controller's cap, which grows while batch latency stays
    inside the budget and halves when it does not. Requests that do not fit wait, in order, for the next batch."""

    def __init__(self, slo_ms: float, max_batch_size: int) -> None:
        super().__init__()
        self.slo_ms, self.max_batch_size = slo_ms, max_batch_size
        self.controller: AIMDBatchController | None = None
        self._carry: deque = deque()
        self._started: float | None = None
        self._size = 0
        self._stop = False

    def _next(self, request_queue: Any, block: bool) -> Any:
        if self._carry:
            return self._carry.popleft()
        return request_queue.get(timeout=1.0) if block else request_queue.get_nowait()

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        if self.controller is None:
            self.controller = AIMDBatchController(self.slo_ms, max_batch=self.max_batch_size)
        c = self.controller
        if self._started is not None:  # the previous batch's predict + responses are done: feed its latency back
            c.finish(self._started, self._size)
            self._started = None
        if self._stop:
            raise _StopLoopError()
        try:
            item = self._next(request_queue, block=True)
        except Empty:
            return [], []
        payloads: list = []
        timed_out: list = []
        n = 0
        apply_timeout = lit_api.request_timeout not in (-1, False, None)
        while True:
            if item == _SENTINEL_VALUE:
                if not payloads:
                    raise _StopLoopError()
                self._stop = True
                break
            response_queue_id, uid, timestamp, x_enc = item
            size = len(x_enc["x"])
            if payloads and n + size > c.max_batch:
                self._carry.appendleft(item)
                break
            self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START, LoopResponseType.REGULAR)
            if apply_timeout and time.monotonic() - timestamp > lit_api.request_timeout:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, x_enc))
                n += size
            if n >= c.max_batch:
                break
            try:
                item = self._next(request_queue, block=False)
            except Empty:
                break
        if payloads:
            self._started, self._size = c.start(), n
        metrics = getattr(lit_api, "metrics", None)
        if metrics is not None:
            metrics.batch_cap.set(c.max_batch)
            try:
                metrics.queue_depth.set(request_queue.qsize() + len(self._carry))
            except (NotImplementedError, OSError):  # pragma: no cover - qsize is unavailable on some platforms
                pass
        return payloads, timed_out


class ModelAPI(ls.LitAPI):
    """The ``LitAPI`` run in each inference worker: decoded float32 batches in, logits out.

    Requests arrive already decoded and validated by the API server (``{"x": array}``), so a bad request never
    reaches, and never kills, a worker.
    """

    def __init__(self, model: ServedModel, settings: ServeSettings) -> None:
        if settings.batching == "adaptive":
            super().__init__(max_batch_size=settings.max_batch_size, batch_timeout=0.0,
                             loop=AdaptiveBatchingLoop(settings.slo_ms, settings.max_batch_size))
        elif settings.batching == "static":
            super().__init__(max_batch_size=settings.max_batch_size, batch_timeout=settings.batch_timeout)
        else:
            super().__init__(max_batch_size=1)
        self.model = model
        self.metrics: ServeMetrics | None = None
        self._sizes: list[int] = []

    def setup(self, device: str) -> None:
        # Only the parent stops the worker (with a sentinel, after the drain): a SIGTERM to the whole process group
        # must not kill it while accepted requests still wait for it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.model.predictor.load()
        self.metrics = ServeMetrics()

    def decode_request(self, request: Any) -> np.ndarray:
        return request["x"]

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        self._sizes = [len(x) for x in inputs]
        return np.concatenate(inputs) if len(inputs) > 1 else inputs[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        y = self.model.predictor(x)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(x))
            self.metrics.batch_seconds.observe(time.perf_counter() - start)
        return y

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return np.split(output, np.cumsum(self._sizes)[:-1]) if len(self._sizes) > 1 else [output]

    def encode_response(self, output: np.ndarray) -> np.ndarray:
        return output


class PredictResponse(BaseModel):
    """``POST /predict``'s answer (one sample in: no batch dimension in the lists)."""

    logits: list
    probabilities: list
    classes: list
    model_version: str
    request_id: str
    cached: int


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["inputs"],
                "properties": {"inputs": {"type": "array", "description": "one sample or a list of samples (nested "
                                          "lists of numbers)", "items": {}}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                     "description": "a .npy file: one sample or a batch"}},
        },
    },
}


class ModelServer(ls.LitServer):
    """``LitServer`` serving a :class:`ServedModel` with the cache, load shedding, metrics and a SIGTERM drain.

    Endpoints: ``POST /predict`` (JSON ``{"inputs": ...}`` or a ``.npy`` body), ``GET /health`` (LitServe's: workers
    up), ``GET /ready`` (503 while starting or draining), ``GET /metrics`` (Prometheus), ``/docs`` (OpenAPI).

    Args:
        model: what to serve (:func:`~mlcost_pl.serve.model.load_export` or
            :func:`~mlcost_pl.serve.model.from_module`).
        settings: :class:`ServeSettings`.
        metrics_dir: the Prometheus multiprocess folder (default: a new temporary folder).

    Example:
        >>> from mlcost_pl.serve import ModelServer, ServeSettings, load_export
        >>> server = ModelServer(load_export("outputs/export/default/model"), ServeSettings())  # doctest: +SKIP
        >>> server.run(host="127.0.0.1", port=8000)  # doctest: +SKIP
    """

    def __init__(self, model: ServedModel, settings: ServeSettings | None = None, metrics_dir: str | None = None) -> None:
        self.settings = settings or ServeSettings()
        self.model = model
        self.price_per_hour = self.settings.price_per_hour()
        self.metrics_dir = prepare_multiprocess_dir(metrics_dir)
        build_cache(**self.settings.cache)  # validate the cache options now, in the parent; each API process builds its own
        self.started = process_start_time()
        ctx = mp.get_context("fork")
        self._in_flight = ctx.Value("i", 0)
        self._draining = ctx.Value("b", 0)
        self._cache: PredictionCache | None = None
        self._metrics: ServeMetrics | None = None
        self._process_pid: int | None = None
        self._uvicorn: dict[int, Any] = {}
        self._drain_lock = threading.Lock()
        self.drain_result: dict[str, Any] | None = None
        super().__init__(ModelAPI(model, self.settings), accelerator="cpu", devices=1,
                         workers_per_device=self.settings.workers, timeout=False,
                         model_metadata={"version": model.version, "variant": model.variant})
        self.uvicorn_graceful_timeout = max(
            1.0, self.settings.drain_seconds - self.settings.ready_grace_s - SHUTDOWN_RESERVE_S - 1.0)

    # ---- per-process state (created after fork, in the API server process that uses it) ----
    def _local(self) -> tuple[PredictionCache | None, ServeMetrics]:
        if self._process_pid != os.getpid():
            self._process_pid = os.getpid()
            self._cache = build_cache(**self.settings.cache)
            self._metrics = ServeMetrics()
        return self._cache, self._metrics

    # ---- endpoints ----
    def _register_api_endpoints(self, lit_api: ls.LitAPI, request_type: Any, response_type: Any) -> None:
        app = self.app

        @app.post("/predict", response_model=PredictResponse, openapi_extra=_BODY_DOC,
                  responses={400: {"description": "malformed body"}, 413: {"description": "body or batch too large"},
                             415: {"description": "unsupported Content-Type"},
                             422: {"description": "wrong shape, dtype, NaN/inf"},
                             500: {"description": "model error (with request_id)"},
                             503: {"description": "overloaded or draining (Retry-After)"}})
        async def predict(request: Request, top_k: int | None = Query(None, ge=1, description="classes per sample")):
            """Predict: logits, probabilities and the top-k classes of one sample or a list of samples."""
            return await self._predict(request, top_k)

        @app.get("/ready")
        async def ready() -> Response:
            """200 when the workers are up and the server is not draining; 503 otherwise."""
            workers = dict(self.workers_setup_status) if getattr(self, "workers_setup_status", None) else {}
            up = bool(workers) and all(v == WorkerSetupStatus.READY for v in workers.values())
            if self._draining.value or not up:
                return Response("draining" if self._draining.value else "not ready", status_code=503)
            return Response("ready", status_code=200)

        @app.get("/metrics")
        async def metrics() -> Response:
            """Prometheus text: every process's serve_* metrics and serve_usd_per_1k_predictions."""
            self._local()
            body, content_type = render(self.price_per_hour, self.started, time.time())
            return Response(body, media_type=content_type)

    def _error(self, status: int, message: str, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": message, "request_id": rid}, status_code=status, headers=headers)

    async def _read_body(self, request: Request) -> bytes:
        limit = int(self.settings.max_body_mb * (1 << 20))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadInput(f"request body of {int(declared)} bytes is over serve.max_body_mb={self.settings.max_body_mb:g}",
                           status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadInput(f"request body is over serve.max_body_mb={self.settings.max_body_mb:g}", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _predict(self, request: Request, top_k: int | None) -> Response:
        start = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        cache, metrics = self._local()
        metrics.requests.inc()
        code = 200
        try:
            try:
                body = await self._read_body(request)
                x, single = decode_body(body, request.headers.get("content-type", ""), self.model.sample_shape,
                                        self.settings.max_request_samples)
            except BadInput as err:
                code = err.status
                metrics.rejected.labels("bad_input").inc()
                return self._error(err.status, str(err), rid)
            logits: list[np.ndarray | None] = [None] * len(x)
            keys: list[str] = []
            if cache is not None:
                keys = [tensor_digest(s, self.model.version) for s in x]
                for i, key in enumerate(keys):
                    logits[i] = cache.get(key)
            misses = [i for i, y in enumerate(logits) if y is None]
            if cache is not None:
                metrics.cache_hits.inc(len(x) - len(misses))
                metrics.cache_misses.inc(len(misses))
            if misses:
                with self._in_flight.get_lock():
                    full = self._in_flight.value >= self.settings.max_queue
                    if not full:
                        self._in_flight.value += 1
                if full:
                    code = 503
                    metrics.rejected.labels("overload").inc()
                    return self._error(503, f"overloaded: {self.settings.max_queue} requests in flight "
                                       "(serve.max_queue); retry later", rid,
                                       {"Retry-After": str(self.settings.retry_after_s)})
                metrics.in_flight.inc()
                try:
                    batch = x if len(misses) == len(x) else x[misses]
                    response, status = await self._submit(batch)
                finally:
                    metrics.in_flight.dec()
                    with self._in_flight.get_lock():
                        self._in_flight.value -= 1
                if status != LitAPIStatus.OK:
                    code = 500
                    log.error("request %s: the model failed (see the inference worker's traceback above)", rid)
                    return self._error(500, f"model error while predicting; request_id={rid}", rid)
                for j, i in enumerate(misses):
                    logits[i] = response[j]
                    if cache is not None:
                        cache.put(keys[i], response[j])
            if cache is not None:
                metrics.cache_bytes.set(cache.local.bytes)
            metrics.predictions.inc(len(x))
            out = format_outputs(np.stack(logits), single, top_k or self.settings.top_k, self.model.labels)
            out.update(model_version=self.model.version, request_id=rid, cached=len(x) - len(misses))
            return JSONResponse(out)
        finally:
            metrics.request_seconds.labels(str(code)).observe(time.perf_counter() - start)

    async def _submit(self, x: np.ndarray) -> tuple[Any, Any]:
        uid = str(uuid.uuid4())
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event)  # registered before the worker can answer
        queue = self._get_request_queue(self.lit_api.api_path)
        queue.put((self.app.response_queue_id, uid, time.monotonic(), {"x": x}))
        try:
            await event.wait()
        finally:
            item = self.response_buffer.pop(uid, None)
        return item.response if item is not None and item.response is not None else (None, LitAPIStatus.ERROR)

    # ---- process lifecycle ----
    def _start_server(self, *args: Any, **kwargs: Any) -> dict:
        # uvicorn's processes are forked here: they must receive SIGTERM (uvicorn's own graceful shutdown)
        blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            self._uvicorn = super()._start_server(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return self._uvicorn

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict) -> None:
        """LitServe's monitor, minus the race with a drain: a worker that exits because the drain stopped it is
        not a crash. A worker that dies otherwise shuts the server down (exit code 0 is then not promised)."""

        def monitor() -> None:
            while not self._draining.value:
                for proc in self.inference_workers:
                    if not proc.is_alive() and not self._draining.value:
                        log.error("inference worker %s (pid %s) died; shutting down", proc.name, proc.pid)
                        self.drain_result = {"seconds": 0.0, "clean": False, "worker_died": proc.pid}
                        self._shutdown_event.set()
                        return
                time.sleep(1.0)

        threading.Thread(target=monitor, daemon=True, name="mlcost-serve-monitor").start()

    def drain(self) -> dict[str, Any]:
        """Stop taking work and finish what was accepted: ``/ready`` turns 503 (requests still arriving while load
        balancers notice are served), after ``ready_grace_s`` the uvicorn servers close their listener (new connections
        are refused) and answer every request they accepted, then the workers get a sentinel and exit; finally ``run``
        returns."""
        with self._drain_lock:
            if self._draining.value:
                return self.drain_result or {}
            self._draining.value = 1
        t0 = time.monotonic()
        deadline = t0 + self.settings.drain_seconds - SHUTDOWN_RESERVE_S
        log.info("SIGTERM: draining (ready=false; up to %.0f s)", self.settings.drain_seconds)
        time.sleep(self.settings.ready_grace_s)
        for proc in self._uvicorn.values():  # uvicorn's own graceful shutdown: close the listener, finish requests
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self._uvicorn.values():
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
        clean = not any(p.is_alive() for p in self._uvicorn.values())
        queue = self._get_request_queue(self.lit_api.api_path)
        for _ in self.inference_workers:
            queue.put(_SENTINEL_VALUE)
        for proc in self.inference_workers:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
        self.drain_result = {"seconds": time.monotonic() - t0, "clean": clean}
        log.info("drained in %.2f s (%s)", self.drain_result["seconds"], "clean" if clean else "deadline reached")
        self._shutdown_event.set()
        return self.drain_result

    def run(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", **kwargs: Any) -> None:
        """Serve until SIGTERM/SIGINT, then drain (see :meth:`drain`) and return."""

        # SIGTERM is blocked in every thread and taken by a dedicated sigwait() thread: a Python-level handler only
        # runs in the main thread, which LitServe parks in a blocking manager call that a signal delivered to another
        # thread never interrupts (the drain would then never start).
        def await_sigterm() -> None:
            signal.sigwait({signal.SIGTERM})
            self.drain()

        def on_sigterm(signum: int, frame: Any) -> None:  # the short windows where SIGTERM is not blocked
            threading.Thread(target=self.drain, name="mlcost-serve-drain", daemon=True).start()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=await_sigterm, name="mlcost-serve-sigterm", daemon=True).start()
        try:
            super().run(host=host, port=port, num_api_servers=self.settings.api_servers, log_level=log_level,
                        generate_client_file=False, pretty_logs=False, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            signal.signal(signal.SIGTERM, previous)


def build_server(model: Any, *, sample: Any = None, labels: Any = None, variant: str = "auto", threads: int = 1,
                 workdir: str | None = None, **settings: Any) -> ModelServer:
    """A :class:`ModelServer` for an export folder or a user's own (Lightning) module.

    Args:
        model: an export folder (path), a ``torch.nn.Module``/``LightningModule`` (exported to ONNX first; needs
            ``sample``), or a :class:`ServedModel`.
        sample: an example input batch for a module.
        labels: class names.
        variant: ``auto`` | ``int8`` | ``fp32`` for an export folder.
        threads: ONNX Runtime threads per worker.
        workdir: where a module's ONNX file goes (default: a temporary folder).
        **settings: :class:`ServeSettings` fields (``slo_ms=30``, ``cache={"url": "redis://..."}``, ...).
    """
    from pathlib import Path

    from mlcost_pl.serve.model import from_module, load_export

    if isinstance(model, ServedModel):
        served = model
    elif isinstance(model, (str, Path)):
        served = load_export(model, variant=variant, threads=threads, labels=labels)
    else:
        if sample is None:
            raise UserInputError("sample: serving a module needs an example input batch (sample=torch.zeros(1, 1, 8, 8))")
        import tempfile

        served = from_module(model, sample, workdir or tempfile.mkdtemp(prefix="mlcost-serve-"), labels=labels,
                             threads=threads)
    return ModelServer(served, ServeSettings(**settings))


def serve(model: Any, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> ModelServer:
    """Serve ``model`` (an export folder or your own LightningModule) until SIGTERM/Ctrl-C; see :func:`build_server`.

    Example:
        >>> from mlcost_pl.serve import serve
        >>> serve("outputs/export/default/model", port=8000, slo_ms=30)  # doctest: +SKIP
        >>> serve(my_lightning_module, sample=torch.zeros(1, 1, 8, 8), labels=[str(i) for i in range(10)])  # doctest: +SKIP
    """
    server = build_server(model, **kwargs)
    server.run(host=host, port=port)
    return server
