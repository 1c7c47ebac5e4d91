"""Cross-check the autoscaling simulator's SLO-miss prediction against real servers.

``uv run python -m bench.autoscale_crosscheck --model-dir <export> [--capacity capacity.json] [--quick]``

The bundled diurnal day is compressed to 10 minutes (``--quick``: 2), scaled so its peak needs a bit more than three
replicas, and replayed through the simulator (HPA, min 1, max 3, the recommended-HPA shape). The same per-second
traffic is then sent open-loop to three real ``recipes.serve`` processes on 127.0.0.1 behind a round-robin client
that uses, each second, as many servers as the simulator had ready pods. Prints the simulator's predicted share of
requests over the SLO next to the measured one (latency > SLO or failed), overall and for the seconds the simulator
calls overloaded vs not. Without ``--capacity``, the first server's capacity is measured first (a short ramp).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from pathlib import Path

import numpy as np

from mlcost_pl.autoscale.capacity import Capacity, load_capacity
from mlcost_pl.autoscale.measure import RampSettings, ServerProcess, measure_url, open_loop, request_bodies, send_times_for_rates
from mlcost_pl.autoscale.plan import deploy_hpa
from mlcost_pl.autoscale.simulate import simulate
from mlcost_pl.autoscale.trace import Trace, diurnal_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="a recipes.export folder")
    parser.add_argument("--capacity", help="capacity.json from recipes.autoscale measure (else measured here)")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--peak-over-capacity", type=float, default=None,
                        help="the trace peak in units of one server's capacity (default: servers + 0.3, a little over them)")
    parser.add_argument("--startup-s", type=float, default=20.0, help="simulated pod start-up in the compressed day")
    parser.add_argument("--quick", action="store_true", help="a 2-minute replay")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally) when killed
    logging.getLogger("httpx").setLevel(logging.WARNING)
    minutes = 2.0 if args.quick else args.minutes

    servers = [ServerProcess(args.model_dir, [f"serve.slo_ms={args.slo_ms:g}", "serve.cache.enabled=false"]).start()
               for _ in range(args.servers)]
    try:
        for s in servers:
            s.wait_ready()
        print(f"{len(servers)} servers ready (start-up {', '.join(f'{s.startup_s:.1f}' for s in servers)} s)", flush=True)
        bodies = request_bodies(args.model_dir)
        if args.capacity:
            capacity = load_capacity(args.capacity, model_dir=args.model_dir)
        else:
            ramp = measure_url(servers[0].url, bodies, RampSettings(slo_ms=args.slo_ms, start_rps=10, growth=1.6, step_s=4,
                                                                     refine_steps=2, max_s=60), pid=servers[0].proc.pid)
            capacity = Capacity(rps=ramp.capacity_rps, slo_ms=args.slo_ms)
            print(f"measured capacity: {capacity.rps:.1f} requests/s at p99 <= {args.slo_ms:g} ms", flush=True)
        cap = Capacity(rps=capacity.rps, slo_ms=args.slo_ms, startup_s=args.startup_s)

        day = diurnal_trace(seed=0)
        compressed = day.compressed(day.duration_s / (minutes * 60), name=f"diurnal in {minutes:g} min")
        peak = args.peak_over_capacity or args.servers + 0.3
        rates = compressed.rps * peak * cap.rps / compressed.rps.max()
        trace = Trace(compressed.seconds, rates, compressed.name)
        policy = deploy_hpa(cap, 80, 1, args.servers, 30, scale_down_percent=100, scale_down_period_s=15,
                            name="HPA 80 %, 1-3")
        sim = simulate(trace, cap, policy)
        ready = np.clip(sim.ready.astype(int), 0, args.servers)

        times = send_times_for_rates(trace.per_second())
        second = times.astype(int)
        targets, turn = [], 0
        for t in second:
            k = max(1, ready[t])  # with no ready server the request still goes somewhere (and, predicted, misses)
            targets.append(f"{servers[turn % k].url}/predict")
            turn += 1
        print(f"replaying {len(times)} requests over {len(rates)} s (peak {rates.max():.0f}/s, capacity "
              f"{cap.rps:.1f}/s per server, 1-{args.servers} servers as the simulator scales)", flush=True)
        lags = np.zeros(len(times))
        latencies = open_loop(times, targets, bodies, timeout_s=max(2.0, 20 * args.slo_ms / 1000), lags=lags)
        over = ~(latencies * 1000 <= args.slo_ms)
        on_time = lags * 1000 <= args.slo_ms / 5  # requests the client sent within a fifth of the SLO of schedule
        measured_per_s = np.bincount(second, weights=over, minlength=len(rates))
        sent_per_s = np.bincount(second, minlength=len(rates))
        predicted_per_s = sim.missed_per_s
        overloaded = predicted_per_s > 0
        figures = {
            "capacity_rps": cap.rps, "slo_ms": args.slo_ms, "minutes": minutes, "requests": int(len(times)),
            "predicted_miss_share": float(predicted_per_s.sum() / max(1, sim.requests)),
            "measured_miss_share": float(over.mean()),
            "predicted_misses": float(predicted_per_s.sum()), "measured_misses": int(over.sum()),
            "overloaded_seconds": int(overloaded.sum()),
            "measured_miss_share_when_predicted_overloaded": float(measured_per_s[overloaded].sum() / max(1, sent_per_s[overloaded].sum())),
            "measured_miss_share_when_predicted_fine": float(measured_per_s[~overloaded].sum() / max(1, sent_per_s[~overloaded].sum())),
            "replica_seconds_simulated": float(sim.replicas.sum()),
            "client_lag_p50_ms": float(np.percentile(lags, 50) * 1000), "client_lag_p99_ms": float(np.percentile(lags, 99) * 1000),
            "on_time_requests": int(on_time.sum()),
            "measured_miss_share_on_time": float(over[on_time].mean()) if on_time.any() else None,
            "predicted_miss_share_on_time": float((predicted_per_s[second[on_time]] / np.maximum(trace.per_second()[second[on_time]], 1e-9)).mean())
            if on_time.any() else None,
        }
    finally:
        for s in servers:
            s.stop()
    print(f"\nSLO {args.slo_ms:g} ms, {figures['requests']} requests in {minutes:g} min, capacity {cap.rps:.1f}/s per server")
    print(f"{'':42s}{'predicted':>12s}{'measured':>12s}")
    print(f"{'requests over the SLO (share)':42s}{100 * figures['predicted_miss_share']:11.2f}%{100 * figures['measured_miss_share']:11.2f}%")
    print(f"{'requests over the SLO (count)':42s}{figures['predicted_misses']:12.0f}{figures['measured_misses']:12d}")
    print(f"{'... in the ' + str(figures['overloaded_seconds']) + ' s predicted overloaded':42s}{'':12s}"
          f"{100 * figures['measured_miss_share_when_predicted_overloaded']:11.2f}%")
    print(f"{'... in the other seconds':42s}{0.0:11.2f}%{100 * figures['measured_miss_share_when_predicted_fine']:11.2f}%")
    ratio = figures["measured_misses"] / figures["predicted_misses"] if figures["predicted_misses"] else math.inf
    print(f"measured / predicted misses: {ratio:.2f}x")
    print(f"client lag behind schedule: p50 {figures['client_lag_p50_ms']:.1f} ms, p99 {figures['client_lag_p99_ms']:.1f} ms; "
          f"{figures['on_time_requests']} requests sent on time (lag <= SLO/5)")
    if figures["on_time_requests"]:
        print(f"on-time requests only: predicted {100 * figures['predicted_miss_share_on_time']:.2f} %, measured "
              f"{100 * figures['measured_miss_share_on_time']:.2f} % over the SLO")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
