"""Capacity at the SLO: an open-loop load generator, the ramp that finds the highest rate one replica serves with p99
inside the SLO, and the adapter that starts ``recipes.serve`` on loopback and measures it.

The ramp (``ramp``) is pure: it takes a function that runs one step at a given rate, so it is tested without a socket.
Latency is measured from each request's *scheduled* send time (open loop: a slow server does not slow the client
down, so queueing shows up in the latency instead of being hidden, i.e. no coordinated omission). A failed or
timed-out request counts as over the SLO.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcost_pl.autoscale.capacity import Capacity, model_version
from mlcost_pl.errors import MissingInputError, UserInputError

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RampSettings:
    """The ramp's bounds.

    Args:
        slo_ms: the p99 latency target (> 0).
        start_rps: the first step's rate.
        growth: each passing step multiplies the rate by this (> 1).
        step_s: seconds per step.
        refine_steps: bisection steps between the last passing and the first failing rate.
        max_s: bound on the ramp's total sending time.
        max_requests: bound on the requests sent.
        max_error_share: a step with more failed requests than this share fails.
        confirm_failures: run a failing step once more and keep the better run.
        min_step_requests: a step lasts long enough to send at least this many requests, so its p99 is not just
            its slowest request.

    Raises:
        ValueError: a bad bound (named).
    """

    slo_ms: float
    start_rps: float = 10.0
    growth: float = 1.5
    step_s: float = 6.0
    refine_steps: int = 3
    max_s: float = 150.0
    max_requests: int = 60_000
    max_error_share: float = 0.01
    confirm_failures: bool = True
    min_step_requests: int = 200

    def __post_init__(self) -> None:
        if not self.slo_ms > 0:
            raise UserInputError(f"serve.slo_ms must be > 0, got {self.slo_ms!r}")
        if not self.start_rps > 0 or not self.growth > 1 or not self.step_s > 0:
            raise UserInputError(f"measure.start_rps and measure.step_s must be > 0 and measure.growth > 1, got "
                             f"{self.start_rps!r}, {self.step_s!r}, {self.growth!r}")
        if self.refine_steps < 0 or not self.max_s > 0 or self.max_requests < 1:
            raise UserInputError("measure.refine_steps must be >= 0, measure.max_s > 0 and measure.max_requests >= 1")


@dataclass
class StepResult:
    """One step of the ramp: the offered rate and what came back.

    Attributes:
        rps: offered requests/s.
        sent: requests sent.
        failed: requests that failed or timed out.
        p50_ms, p99_ms: latency quantiles from the scheduled send time (failures count as infinitely slow).
        completed_rps: successful requests per second of the step.
        cpu_cores: the server's CPU use during the step, in cores (``None`` when unknown).
    """

    rps: float
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    completed_rps: float
    cpu_cores: float | None = None

    def passed(self, slo_ms: float, max_error_share: float) -> bool:
        """p99 within the SLO and failures within their share."""
        return self.p99_ms <= slo_ms and self.failed <= max_error_share * max(1, self.sent)


@dataclass
class RampResult:
    """The ramp's outcome: the capacity (highest passing rate) and every step."""

    capacity_rps: float
    saturation_rps: float
    at_capacity: StepResult
    steps: list[StepResult] = field(default_factory=list)
    saturated: bool = True


def ramp(run_step: Callable[[float, float], StepResult], settings: RampSettings) -> RampResult:
    """Raise the rate geometrically until a step fails (twice, with ``confirm_failures``), then bisect; bounded by
    ``max_s`` and ``max_requests``.

    Args:
        run_step: ``run_step(rps, seconds) -> StepResult``.
        settings: the bounds.

    Raises:
        ValueError: the SLO is impossible: even a trickle of requests misses it (the message names ``serve.slo_ms``).
    """
    steps: list[StepResult] = []
    spent_s, spent_requests = 0.0, 0

    def step(rps: float) -> StepResult | None:
        nonlocal spent_s, spent_requests
        seconds = max(settings.step_s, min(math.ceil(settings.min_step_requests / rps), 30))  # a trickle: 30 s at most
        if spent_s + seconds > settings.max_s or spent_requests + rps * seconds > settings.max_requests:
            return None
        result = run_step(rps, seconds)
        spent_s += seconds
        spent_requests += result.sent
        steps.append(result)
        return result

    def ok(result: StepResult) -> bool:
        return result.passed(settings.slo_ms, settings.max_error_share)

    def confirmed_step(rps: float) -> StepResult | None:
        """A failing step is run once more and the better run kept: one scheduling hiccup on a busy host should not
        decide the capacity (a real limit fails twice)."""
        result = step(rps)
        if result is None or ok(result) or not settings.confirm_failures:
            return result
        again = step(rps)
        return result if again is None else min((result, again), key=lambda r: (not ok(r), r.p99_ms))

    best: StepResult | None = None
    fail: StepResult | None = None
    rate = settings.start_rps
    while True:
        result = confirmed_step(rate)
        if result is None:
            break
        if not ok(result):
            fail = result
            break
        best, rate = result, rate * settings.growth
    if best is None and fail is not None:
        trickle = step(max(1.0, min(settings.start_rps / 4, 20.0 / settings.step_s)))
        if trickle is None or not ok(trickle):
            seen = trickle or fail
            raise UserInputError(f"serve.slo_ms={settings.slo_ms:g}: impossible for one replica: p99 is {seen.p99_ms:.1f} ms "
                             f"even at {seen.rps:.1f} requests/s ({seen.failed} of {seen.sent} failed)")
        best = trickle
    if best is None:
        raise UserInputError(f"measure.max_s={settings.max_s:g} / measure.max_requests={settings.max_requests} allow no "
                         f"step of measure.step_s={settings.step_s:g} s at {settings.start_rps:g} requests/s")
    if fail is not None:
        lo, hi = best.rps, fail.rps
        for _ in range(settings.refine_steps):
            mid = (lo + hi) / 2
            result = confirmed_step(mid)
            if result is None:
                break
            if ok(result):
                best, lo = result, mid
            else:
                hi = mid
    saturation = max(max(s.completed_rps for s in steps), best.rps)
    return RampResult(capacity_rps=best.rps, saturation_rps=saturation, at_capacity=best, steps=steps, saturated=fail is not None)


def send_times_for_rates(rates: Sequence[float]) -> np.ndarray:
    """Evenly spaced send times (seconds) for a per-second rate schedule: second ``i`` carries ``rates[i]``
    requests (fractions carried over to the next second)."""
    times: list[np.ndarray] = []
    carry = 0.0
    for i, r in enumerate(rates):
        want = r + carry
        n = int(want)
        carry = want - n
        if n:
            times.append(i + np.arange(n) / n)
    return np.concatenate(times) if times else np.zeros(0)


async def _open_loop(times: np.ndarray, targets: Sequence[str], bodies: Sequence[bytes], timeout_s: float,
                     max_connections: int, lags: np.ndarray | None) -> np.ndarray:
    import httpx

    latencies = np.full(len(times), np.inf)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def one(i: int) -> None:
            if lags is not None:
                lags[i] = loop.time() - (start + times[i])
            try:
                response = await client.post(targets[i], content=bodies[i % len(bodies)],
                                             headers={"content-type": "application/json"})
                if response.status_code == 200:
                    latencies[i] = loop.time() - (start + times[i])
            except (httpx.HTTPError, OSError):
                pass

        tasks = []
        for i, t in enumerate(times):
            delay = start + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        if tasks:
            await asyncio.wait(tasks)
    return latencies


def open_loop(times: np.ndarray, targets: Sequence[str], bodies: Sequence[bytes], timeout_s: float = 5.0,
              max_connections: int = 256, lags: np.ndarray | None = None) -> np.ndarray:
    """Send request ``i`` to ``targets[i]`` at ``times[i]`` seconds from now whatever the earlier ones are doing;
    return each latency in seconds from its scheduled time (``inf`` for a failure or timeout). ``lags``, if given,
    receives how late each request actually left (the client's own delay, which the latency includes)."""
    return asyncio.run(_open_loop(np.asarray(times, float), targets, bodies, timeout_s, max_connections, lags))


def summarize(rps: float, seconds: float, latencies: np.ndarray, cpu_cores: float | None = None) -> StepResult:
    """A step's figures from its latencies (seconds, ``inf`` = failed)."""
    ms = latencies * 1000
    failed = int(np.isinf(ms).sum())
    return StepResult(rps=rps, sent=len(ms), failed=failed,
                      p50_ms=float(np.percentile(ms, 50, method="inverted_cdf")) if len(ms) else 0.0,
                      p99_ms=float(np.percentile(ms, 99, method="inverted_cdf")) if len(ms) else 0.0,
                      completed_rps=(len(ms) - failed) / seconds, cpu_cores=cpu_cores)


def repeating_stream(n: int, hit_rate: float, fresh: Callable[[np.random.Generator], bytes], seed: int) -> list[bytes]:
    """``n`` request bodies where a share ``hit_rate`` repeats an earlier body (picked Zipf-like: the first bodies seen
    are the popular ones) and the rest are new ones from ``fresh(rng)``: a prediction cache's workload at that hit rate.

    Raises:
        ValueError: ``hit_rate`` outside [0, 1) (named ``cache_hit_rate``).
    """
    if not 0.0 <= hit_rate < 1.0:
        raise UserInputError(f"cache_hit_rate must be in [0, 1), got {hit_rate!r}")
    rng = np.random.default_rng(seed)
    seen: list[bytes] = []
    out = []
    for _ in range(n):
        if seen and rng.random() < hit_rate:
            out.append(seen[min(len(seen), int(rng.zipf(1.3))) - 1])
        else:
            seen.append(fresh(rng))
            out.append(seen[-1])
    return out


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    usage: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields_[1])
        usage[int(entry)] = (int(fields_[11]) + int(fields_[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(usage.get(p, 0.0) for p in tree)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_bodies(model_dir: str | os.PathLike[str], n: int = 64) -> list[bytes]:
    """JSON bodies ``{"inputs": <sample>}`` from the export's stored validation samples (``verify_set.npz``, loaded
    without pickle)."""
    import json

    path = Path(model_dir) / "verify_set.npz"
    if not path.is_file():
        raise MissingInputError(f"model_dir={model_dir}: no verify_set.npz to draw request samples from (a recipes.export folder has one)")
    with np.load(path, allow_pickle=False) as data:
        x = data["x"][:n]
    return [json.dumps({"inputs": sample.tolist()}).encode() for sample in x]


class ServerProcess:
    """``python -m recipes.serve`` on 127.0.0.1 as a child process: started, waited for ``/ready``, stopped with
    SIGTERM (it drains and exits 0), killed only if it overstays. Its run folder (Hydra's, with ``serve.log``) and its
    console log live in a temporary folder removed on :meth:`stop`, so a measurement leaves nothing behind.

    Args:
        model_dir: the export to serve.
        args: extra Hydra overrides for ``recipes.serve``.
        startup_timeout_s: how long ``/ready`` may take.
    """

    def __init__(self, model_dir: str, args: Sequence[str] = (), startup_timeout_s: float = 180.0) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="mlcost-serve-"))
        self._log = open(self._dir / "console.log", "wb")  # noqa: SIM115 (closed in stop)

    def start(self) -> ServerProcess:
        """Start the process (returns at once; ``wait_ready`` waits)."""
        cmd = [sys.executable, "-m", "recipes.serve", f"model_dir={self.model_dir}", "host=127.0.0.1", f"port={self.port}",
               "log_level=warning", f"hydra.run.dir={self._dir / 'run'}", *self.args]
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's output."""
        text = (self._dir / "console.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def wait_ready(self) -> float:
        """Seconds from start to ``/ready`` answering 200.

        Raises:
            ValueError: the server exited with a user error (its one line quoted).
            RuntimeError: it crashed or was not ready in time (its last lines quoted).
        """
        import httpx

        assert self.proc is not None, "start() first"
        deadline = self._t0 + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                if code == 2:
                    raise UserInputError(f"recipes.serve refused model_dir={self.model_dir}: {tail}")
                raise RuntimeError(f"recipes.serve exited with code {code} before it was ready: {tail}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1.0).status_code == 200:
                    self.startup_s = time.monotonic() - self._t0
                    return self.startup_s
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"recipes.serve was not ready within measure.startup_timeout_s={self.startup_timeout_s:g}: {tail}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL only past ``timeout_s``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def measure_url(url: str, bodies: Sequence[bytes], settings: RampSettings, pid: int | None = None,
                step_bodies: Callable[[int, int], Sequence[bytes]] | None = None) -> RampResult:
    """Ramp an open-loop load against ``url``'s ``/predict`` and return the capacity; ``pid`` is the server's
    process, whose CPU (and its children's) is sampled per step. ``step_bodies(n, step_index)``, if given, makes
    each step's ``n`` bodies (e.g. a :func:`repeating_stream` at a cache hit rate, new inputs every step); otherwise
    every step cycles ``bodies``."""
    timeout_s = max(2.0, 20 * settings.slo_ms / 1000)
    steps_run = [0]

    def run_step(rps: float, seconds: float) -> StepResult:
        times = send_times_for_rates([rps] * int(math.ceil(seconds)))
        cpu0, t0 = (process_tree_cpu_s(pid), time.monotonic()) if pid else (None, None)
        steps_run[0] += 1
        sent = step_bodies(len(times), steps_run[0]) if step_bodies is not None else bodies
        latencies = open_loop(times, [f"{url}/predict"] * len(times), sent, timeout_s=timeout_s)
        cores = (process_tree_cpu_s(pid) - cpu0) / (time.monotonic() - t0) if pid else None
        return summarize(rps, seconds, latencies, cores)

    open_loop(send_times_for_rates([5.0]), [f"{url}/predict"] * 5, bodies, timeout_s=timeout_s)  # warm-up
    return ramp(run_step, settings)


def measure_server(model_dir: str, settings: RampSettings, server_args: Sequence[str] = (),
                   startup_timeout_s: float = 180.0) -> Capacity:
    """Start ``recipes.serve`` for ``model_dir`` on loopback (at ``settings.slo_ms``), ramp it, return its capacity.

    Raises:
        FileNotFoundError: no export folder / manifest / verify set (named ``model_dir``).
        ValueError: the server refused the model, or the SLO is impossible (named ``serve.slo_ms``).
    """
    version = model_version(model_dir)
    bodies = request_bodies(model_dir)
    args = [f"serve.slo_ms={settings.slo_ms:g}", *server_args]
    with ServerProcess(model_dir, args, startup_timeout_s) as server:
        assert server.proc is not None
        result = measure_url(server.url, bodies, settings, pid=server.proc.pid)
    at = result.at_capacity
    cpu_percent = 100.0 * at.cpu_cores if at.cpu_cores else 100.0
    return Capacity(
        rps=round(result.capacity_rps, 2), slo_ms=settings.slo_ms, cpu_utilization_at_capacity=round(max(1.0, cpu_percent), 1),
        saturation_rps=round(max(result.saturation_rps, result.capacity_rps), 2), startup_s=round(server.startup_s or 30.0, 1),
        mean_latency_ms=round(at.p50_ms, 2), model_version=version, model_dir=str(Path(model_dir).resolve()),
        measured={"host": socket.gethostname(), "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "saturated": result.saturated, "settings": asdict(settings), "server_args": args,
                  "steps": [asdict(s) for s in result.steps]},
    )
