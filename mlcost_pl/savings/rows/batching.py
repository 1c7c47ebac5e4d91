"""The batching row: requests/s one replica serves with p99 within the SLO, adaptive batching vs unbatched, and with the
prediction cache at a given hit rate; real ``recipes.serve`` processes on 127.0.0.1 serving the run's export, ramped
by the autoscale capacity measurement (``mlcost_pl.autoscale.measure``: open loop, latency from the scheduled send).

The serving bill is replica-hours, so the saving is ``1 - rps_unbatched / rps_batched`` (replicas needed batched vs
unbatched). Every arm serves the fp32 ONNX variant, so quantization (its own row) is not inside this figure. The
unbatched arm's capacity is the bill *before* any serving technique: it is shared with the autoscale row and the
serving bill through ``ctx.cache["serve_capacity"]``, so the combined estimate does not count batching twice.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun

# arm -> recipes.serve overrides; the cache arm adds the prediction cache to the batched arm. All serve fp32: the
# quantization row measures INT8 on its own, and the combined estimate composes the two.
ARMS: dict[str, list[str]] = {
    "unbatched": ["serve.variant=fp32", "serve.batching=none", "serve.cache.enabled=false"],
    "batched": ["serve.variant=fp32", "serve.batching=adaptive", "serve.max_batch_size=32", "serve.cache.enabled=false"],
    "batched_cache": ["serve.variant=fp32", "serve.batching=adaptive", "serve.max_batch_size=32", "serve.cache.enabled=true"],
}
BASELINE_ARM = "unbatched"  # the serving bill before any technique; the cache arm rests on an assumed hit rate


def check_options(s: Any) -> None:
    """One line naming the option when ``savings.slo_ms``, ``savings.cache_hit_rate`` or ``savings.replica_rps`` is bad."""
    if not isinstance(s.slo_ms, (int, float)) or not s.slo_ms > 0:
        raise UserInputError(f"savings.slo_ms must be a number of milliseconds > 0, got {s.slo_ms!r}")
    if not isinstance(s.cache_hit_rate, (int, float)) or not 0 <= s.cache_hit_rate < 1:
        raise UserInputError(f"savings.cache_hit_rate must be in [0, 1), got {s.cache_hit_rate!r}")
    if s.replica_rps is not None and (not isinstance(s.replica_rps, (int, float)) or not s.replica_rps > 0):
        raise UserInputError(f"savings.replica_rps must be > 0, or null to measure it, got {s.replica_rps!r}")


def _settings(cfg: Any) -> Any:
    from mlcost_pl.autoscale.measure import RampSettings

    s = cfg.savings
    max_s = float(s.serve_ramp_s or (20 if s.quick else 120))
    return RampSettings(slo_ms=float(s.slo_ms), start_rps=20.0, growth=2.0, step_s=2.5 if s.quick else 6.0,
                        refine_steps=1 if s.quick else 3, max_s=max_s, min_step_requests=50 if s.quick else 200)


def _bodies(model_dir: str, hit_rate: float, seed: int) -> Any:
    """``step_bodies(n, step)``: JSON bodies of new random inputs of the export's sample shape, a share ``hit_rate``
    repeating earlier ones within the step (new inputs every step, so a step never hits the previous one's)."""
    import numpy as np

    from mlcost_pl.autoscale.measure import repeating_stream

    with np.load(f"{model_dir}/verify_set.npz", allow_pickle=False) as data:
        shape = data["x"].shape[1:]

    def fresh(rng: np.random.Generator) -> bytes:
        return json.dumps({"inputs": np.round(rng.random(shape), 3).tolist()}).encode()

    return lambda n, step: repeating_stream(n, hit_rate, fresh, seed=seed * 1000 + step)


def measure_arms(ctx: RunContext, arms: list[str]) -> dict[str, dict[str, Any]]:
    """Start one ``recipes.serve`` per arm in ``arms`` (all at once, so they warm up together), then ramp each in turn
    to its capacity at ``savings.slo_ms``; results are kept in ``ctx.cache["serve_arms"]`` and not measured twice.

    Raises:
        ValueError: no price (no export to serve), or the SLO is impossible for an arm (named ``serve.slo_ms``).
    """
    import httpx

    from mlcost_pl.autoscale.measure import ServerProcess, measure_url, request_bodies
    from mlcost_pl.serve.metrics import parse_metrics

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    done: dict[str, dict[str, Any]] = ctx.cache.setdefault("serve_arms", {})
    todo = [a for a in arms if a not in done]
    if not todo:
        return done
    cfg = ctx.cfg
    model_dir, _ = ctx.exported()
    settings = _settings(cfg)
    hit_rate = float(cfg.savings.cache_hit_rate)
    warmup = request_bodies(model_dir, 8)  # the ramp's warm-up requests; its steps send step_bodies
    servers = {a: ServerProcess(str(model_dir), [f"serve.slo_ms={settings.slo_ms:g}", "serve.max_queue=4096", *ARMS[a]])
               for a in todo}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        for arm, server in servers.items():
            h = hit_rate if arm == "batched_cache" else 0.0
            t0 = time.perf_counter()
            result = measure_url(server.url, warmup, settings, pid=server.proc.pid if server.proc else None,
                                 step_bodies=_bodies(str(model_dir), h, int(cfg.seed)))
            m = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=10).text)
            lookups = m.get("serve_cache_hits_total", 0.0) + m.get("serve_cache_misses_total", 0.0)
            at = result.at_capacity
            failing = [st.rps for st in result.steps if st.rps > result.capacity_rps
                       and not st.passed(settings.slo_ms, settings.max_error_share)]
            done[arm] = {"rps": round(result.capacity_rps, 2), "p99_ms": round(at.p99_ms, 2),
                         "p50_ms": round(at.p50_ms, 2), "saturated": result.saturated,
                         "first_failing_rps": round(min(failing), 2) if failing else None, "steps": len(result.steps),
                         "ramp_s": round(time.perf_counter() - t0, 1), "startup_s": round(server.startup_s or 0, 1),
                         "overrides": ARMS[arm],
                         "hit_rate": round(m.get("serve_cache_hits_total", 0.0) / lookups, 3) if lookups else None,
                         "cpu_cores": round(at.cpu_cores, 2) if at.cpu_cores is not None else None}
    finally:
        for arm, server in servers.items():
            code = server.stop()
            if arm in done and "exit_code" not in done[arm]:
                done[arm]["exit_code"] = code
    if BASELINE_ARM in done:
        ctx.cache["serve_capacity"] = {"rps": done[BASELINE_ARM]["rps"], "slo_ms": settings.slo_ms,
                                       "source": f"measured: unbatched fp32 recipes.serve at p99 <= {settings.slo_ms:g} ms "
                                                 f"(the bill before batching, INT8 and autoscaling)"}
    return done


def serving_capacity(ctx: RunContext) -> dict[str, Any]:
    """One replica's requests/s at the SLO before any serving technique, and where it comes from: the batching row's
    unbatched arm when it ran, else one ramp of that arm when ``savings.replica_rps`` is null, else
    ``savings.replica_rps`` as given."""
    if "serve_capacity" not in ctx.cache:
        given = ctx.cfg.savings.replica_rps
        if given is None:
            measure_arms(ctx, [BASELINE_ARM])
        else:
            ctx.cache["serve_capacity"] = {"rps": float(given), "slo_ms": None,
                                           "source": "given by savings.replica_rps, not measured"}
    return ctx.cache["serve_capacity"]


def _bound(arm: dict[str, Any]) -> str:
    """The ramp's resolution: the capacity lies below the first rate that failed the SLO."""
    if not arm["saturated"]:
        return " (not saturated within savings.serve_ramp_s: a lower bound)"
    return f" (failed at {arm['first_failing_rps']:g})" if arm.get("first_failing_rps") else ""


@quietly
def measure(ctx: RunContext) -> Row:
    """Capacity at the SLO of unbatched, adaptive-batched, and adaptive-batched + cache at ``savings.cache_hit_rate``."""
    cfg = ctx.cfg
    arms = measure_arms(ctx, list(ARMS))
    u, b, c = arms["unbatched"], arms["batched"], arms["batched_cache"]
    slo = float(cfg.savings.slo_ms)
    saving = 1.0 - u["rps"] / b["rps"]
    note = (f"requests/s one replica serves at p99 <= {slo:g} ms: adaptive batching (max 32) {b['rps']:.1f}{_bound(b)} vs "
            f"unbatched {u['rps']:.1f}{_bound(u)} = {b['rps'] / u['rps']:.2f}x, the saving is 1 - replicas batched / "
            f"unbatched; with the prediction cache at hit rate {float(cfg.savings.cache_hit_rate):g} (measured "
            f"{c['hit_rate']}) {c['rps']:.1f}/s{_bound(c)} = {c['rps'] / b['rps']:.2f}x batched without it (not in the saving); "
            f"recipes.serve on 127.0.0.1 serving the run's fp32 export (serve.variant=fp32, 1 worker; INT8 is the "
            f"quantization row's), open-loop ramp of JSON requests from the same process, so the load generator shares this machine's "
            f"{_cpus()} CPUs with the server")
    return Row("batching", saving, MEASURED, note, rerun("batching"), {"arms": arms, "slo_ms": slo})


def _cpus() -> int:
    import os

    return os.cpu_count() or 1
