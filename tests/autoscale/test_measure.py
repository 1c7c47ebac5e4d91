"""Capacity at the SLO: the ramp's logic (pure, a step function injected), the open-loop client against a real
loopback server, and (slow) recipes.autoscale measure against the real recipes.serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from mlcost_pl.autoscale.capacity import load_capacity, model_version
from mlcost_pl.autoscale.measure import (
    RampSettings,
    StepResult,
    open_loop,
    ramp,
    repeating_stream,
    send_times_for_rates,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]


def queue_model(capacity_rps: float, base_ms: float = 5.0):
    """A step function standing in for a server whose p99 grows sharply as the rate nears ``capacity_rps``."""
    calls = []

    def run_step(rps: float, seconds: float) -> StepResult:
        calls.append(rps)
        rho = min(rps / capacity_rps, 0.999)
        p99 = base_ms / (1 - rho)
        return StepResult(rps=rps, sent=int(rps * seconds), failed=0, p50_ms=base_ms, p99_ms=p99,
                          completed_rps=min(rps, capacity_rps), cpu_cores=rho)

    return run_step, calls


def test_ramp_grows_then_bisects_to_the_highest_rate_within_the_slo():
    run_step, calls = queue_model(100.0)
    result = ramp(run_step, RampSettings(slo_ms=50, start_rps=10, growth=2, step_s=1, refine_steps=4, min_step_requests=1))
    # p99 <= 50 ms <=> rho <= 0.9 <=> rate <= 90 req/s; growth 10, 20, 40, 80, 160 (fails, confirmed), then bisect
    assert calls[:6] == [10, 20, 40, 80, 160, 160]
    assert 80 <= result.capacity_rps <= 90 and result.saturated
    assert result.at_capacity.p99_ms <= 50 and result.saturation_rps == pytest.approx(100)


def test_ramp_is_bounded_in_time_and_requests():
    run_step, calls = queue_model(1e9)
    result = ramp(run_step, RampSettings(slo_ms=50, start_rps=10, growth=2, step_s=2, max_s=9, min_step_requests=1))
    assert len(calls) == 4 and not result.saturated  # 4 steps of 2 s fit in 9 s; never saturated
    run_step, calls = queue_model(1e9)
    ramp(run_step, RampSettings(slo_ms=50, start_rps=10, growth=2, step_s=1, max_requests=75, min_step_requests=1))
    assert calls == [10, 20, 40]  # the next step (80 requests) would pass 75


def test_an_impossible_slo_is_one_line_naming_serve_slo_ms():
    run_step, _ = queue_model(100.0, base_ms=30.0)
    with pytest.raises(ValueError, match=r"serve.slo_ms=20: impossible for one replica: p99 is 3\d\.\d ms") as err:
        ramp(run_step, RampSettings(slo_ms=20, start_rps=10, step_s=1))
    assert "\n" not in str(err.value)


def test_send_times_follow_the_rate_schedule():
    times = send_times_for_rates([2.0, 0.5, 0.5, 3.0])
    assert times.tolist() == [0.0, 0.5, 2.0, 3.0, 3 + 1 / 3, 3 + 2 / 3]


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.service_s)
        status = 500 if self.path.endswith("/fail") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_open_loop_measures_from_the_scheduled_time_and_counts_failures():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.service_s = 0.02
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        times = send_times_for_rates([20.0])
        latencies = open_loop(times, [f"{url}/predict"] * 10 + [f"{url}/fail"] * 10, [b'{"inputs": [1]}'])
        step = summarize(20.0, 1.0, latencies)
        assert step.sent == 20 and step.failed == 10 and np.isinf(latencies[10:]).all()
        assert (latencies[:10] >= 0.02).all() and step.p50_ms >= 20  # at least the service time
        assert not step.passed(slo_ms=1000, max_error_share=0.01)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_measure_recipe_against_the_real_server_writes_capacity_json(tiny_export, tmp_path):
    """recipes.autoscale measure starts recipes.serve on loopback, ramps, writes capacity.json (model version
    recorded, so plan refuses it for another model)."""
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path)}
    out = tmp_path / "capacity.json"
    cmd = [sys.executable, "-m", "recipes.autoscale", "measure", f"model_dir={tiny_export}", "serve.slo_ms=100",
           f"measure.out={out}", "measure.step_s=2", "measure.max_s=24", "measure.growth=3", "measure.refine_steps=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["rps"] > 0 and data["slo_ms"] == 100 and data["model_version"] == model_version(tiny_export)
    assert data["startup_s"] > 0 and data["measured"]["steps"]
    assert load_capacity(out, model_dir=tiny_export).rps == data["rps"]



def test_a_step_lasts_long_enough_for_a_meaningful_p99():
    run_step, _ = queue_model(1e9)
    seen = []

    def timed(rps, seconds):
        seen.append(seconds)
        return run_step(rps, seconds)

    ramp(timed, RampSettings(slo_ms=50, start_rps=10, growth=2, step_s=2, max_s=60, min_step_requests=200))
    assert seen[:3] == [20, 10, 5]  # 200 requests at 10, 20, 40 req/s


def test_repeating_stream_repeats_the_given_share_of_inputs():
    fresh = lambda rng: rng.bytes(16)  # noqa: E731
    stream = repeating_stream(4000, 0.5, fresh, seed=3)
    repeats = len(stream) - len(set(stream))
    assert abs(repeats / len(stream) - 0.5) < 0.03
    assert repeating_stream(4000, 0.5, fresh, seed=3) == stream  # seeded
    assert len(set(repeating_stream(100, 0.0, fresh, seed=3))) == 100
    with pytest.raises(ValueError, match="cache_hit_rate"):
        repeating_stream(10, 1.0, fresh, seed=0)
