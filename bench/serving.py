"""Serving: unbatched vs LitServe static batching vs our adaptive batching, the prediction cache, drain, cost metric.

    uv run python -m bench.serving [--quick] [--out bench_serving.json] [--export <export folder>]

Everything on 127.0.0.1; three real ``python -m recipes.serve`` processes (one per batching mode) serve the same
digits export (the default recipe's ResNet-18 on 1x32x32 digits, trained briefly here and exported with
``mlcost_pl.export.export``), all up at once, measured interleaved (per rate step: each arm in turn).

1. Open-loop Poisson arrivals at increasing rates (``.npy`` bodies, keep-alive connections; latency counted from the
   scheduled send time, so a lagging generator does not hide queueing): throughput at p99 <= 50 ms per arm.
2. One client, back to back: p50/p99 per arm.
3. Cache sweep: Zipf-repeated inputs at hit rates 0/20/50/80 %, closed loop with 8 clients, cache on vs cache off;
   and the p50 one-client cost of a cache miss.
4. Drain: SIGTERM under load, N times: requests the server read (its ``serve_requests_total``) vs answered.
5. ``serve_usd_per_1k_predictions`` vs price x time since launch / predictions answered, counted by the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np

from mlcost_pl.autoscale.measure import repeating_stream

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
SLO_MS = 50.0
PRICE = 0.0832
ARMS = {
    "unbatched": ["serve.batching=none"],
    "litserve_static": ["serve.batching=static", "serve.max_batch_size=8", "serve.batch_timeout=0.01"],
    "ours_adaptive": ["serve.batching=adaptive", f"serve.slo_ms={SLO_MS:g}", "serve.max_batch_size=32"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_export(workdir: Path, epochs: int) -> Path:
    from bench.export_speed import _train_digits
    from mlcost_pl.export import export

    model, dm = _train_digits(epochs)
    out = workdir / "export"
    export(model, dm, out, calibration_samples=128, batch_sizes=(1, 8), latency_iters=3, verify_samples=64,
           max_accuracy_drop=0.05)
    return out


class Server:
    def __init__(self, export_dir: Path, workdir: Path, name: str, overrides: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prom = workdir / f"prom-{name}-{self.port}"
        env = {**os.environ, "MLCOST_ROOT": str(workdir), "PROMETHEUS_MULTIPROC_DIR": str(self.prom)}
        self.launched = time.time()
        self.log = open(workdir / f"{name}-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recipes.serve", f"model_dir={export_dir}", f"port={self.port}",
             "serve.max_queue=4096", "serve.drain_seconds=20", "serve.ready_grace_s=0.5", *overrides],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.answered = 0

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server not ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.log.close()
        return rc


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


HEADERS = {"Content-Type": "application/octet-stream"}


async def _open_loop(server: Server, rate: float, duration: float, bodies: list[bytes], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    lat, codes = [], {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one(body: bytes, scheduled: float) -> None:
            try:
                r = await client.post(f"{server.url}/predict", content=body, headers=HEADERS)
                code = r.status_code
            except httpx.TransportError:
                code = "transport"
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                lat.append(loop.time() - scheduled)
                server.answered += 1

        tasks, t0, t = [], loop.time(), 0.0
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= duration:
                break
            delay = t0 + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[len(tasks) % len(bodies)], t0 + t)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    arr = np.asarray(lat) * 1e3 if lat else np.asarray([float("inf")])
    return {"rate": rate, "sent": len(tasks), "ok": codes.get(200, 0), "codes": {str(k): v for k, v in codes.items()},
            "throughput": codes.get(200, 0) / elapsed, "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99))}


def one_client(server: Server, bodies: list[bytes], n: int) -> dict:
    lat = []
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            t = time.perf_counter()
            r = client.post(f"{server.url}/predict", content=bodies[i % len(bodies)], headers=HEADERS)
            lat.append((time.perf_counter() - t) * 1e3)
            assert r.status_code == 200, r.text
            server.answered += 1
    arr = np.asarray(lat[max(1, n // 10):])  # skip a warm-up tenth
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)), "n": len(arr)}


def zipf_stream(n: int, hit_rate: float, shape: tuple, seed: int) -> list[bytes]:
    """Requests where a fraction ``hit_rate`` repeats an earlier input (picked Zipf-like: popular ones more often)."""
    return repeating_stream(n, hit_rate, lambda rng: _npy(rng.random((1, *shape), dtype=np.float32)), seed)


def closed_loop(server: Server, bodies: list[bytes], clients: int, duration: float) -> dict:
    async def run() -> dict:
        loop = asyncio.get_running_loop()
        done, lat, cached = [0], [], [0]
        stop = loop.time() + duration
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
            async def worker(k: int) -> None:
                i = k
                while loop.time() < stop:
                    t = loop.time()
                    r = await client.post(f"{server.url}/predict", content=bodies[i % len(bodies)], headers=HEADERS)
                    i += clients
                    if r.status_code == 200:
                        done[0] += 1
                        server.answered += 1
                        cached[0] += r.json()["cached"]
                        lat.append(loop.time() - t)

            t0 = loop.time()
            await asyncio.gather(*(worker(k) for k in range(clients)))
            elapsed = loop.time() - t0
        return {"throughput": done[0] / elapsed, "hit_rate": cached[0] / max(1, done[0]),
                "p50_ms": float(np.percentile(np.asarray(lat) * 1e3, 50))}

    return asyncio.run(run())


def metrics_of(server: Server) -> dict[str, float]:
    from mlcost_pl.serve.metrics import parse_metrics

    return parse_metrics(httpx.get(f"{server.url}/metrics", timeout=10).text)


def drain_round(export_dir: Path, workdir: Path, variant: str) -> dict:
    from mlcost_pl.serve.metrics import read_multiprocess_dir

    server = Server(export_dir, workdir, "drain", [f"serve.variant={variant}", "serve.batching=adaptive"])
    server.wait_ready()
    stop, outcomes = threading.Event(), {}
    rng = np.random.default_rng(0)
    bodies = [_npy(rng.random((1, 1, 32, 32), dtype=np.float32)) for _ in range(32)]

    def load(k: int) -> None:
        i = k
        while not stop.is_set():
            try:
                r = httpx.post(f"{server.url}/predict", content=bodies[i % 32], headers={**HEADERS, "Connection": "close"},
                               timeout=30)
                key = r.status_code
            except httpx.ConnectError:
                key = "refused"
                time.sleep(0.01)
            except httpx.TransportError as err:
                key = type(err).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
            i += 4

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    t0 = time.monotonic()
    rc = server.stop()
    elapsed = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join()
    accepted = read_multiprocess_dir(server.prom).get("serve_requests_total", 0.0)
    answered = sum(v for k, v in outcomes.items() if isinstance(k, int))
    return {"rc": rc, "exit_s": elapsed, "accepted": accepted, "answered": answered, "lost": accepted - answered,
            "outcomes": {str(k): v for k, v in outcomes.items()}}


def _ratio(ours: float, base: float) -> str:
    if base <= 0:
        return f"{ours:.0f} vs {base:.0f} req/s (the baseline met p99 <= {SLO_MS:g} ms at no rate)"
    return f"{ours:.0f} vs {base:.0f} req/s = {ours / base:.2f}x"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="short steps, 3 drain rounds, 1 training epoch")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--export", default=None, help="serve this export folder instead of training one")
    args = p.parse_args()
    q = args.quick
    step_s, one_n, drains, cache_s = (3.0, 150, 3, 4.0) if q else (8.0, 500, 20, 10.0)
    rates = [25, 50, 100, 200, 400, 800]
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    t_start = time.time()
    if args.export:
        export_dir = Path(args.export)
    else:
        print(f"workdir {workdir}; training + exporting the digits ResNet-18 ...", flush=True)
        export_dir = make_export(workdir, epochs=1 if q else 3)
    from mlcost_pl.serve.model import load_export

    chosen = load_export(export_dir, variant="auto")
    variant = chosen.variant
    print(f"variant: {variant} ({chosen.reason})", flush=True)
    shape = chosen.sample_shape
    rng = np.random.default_rng(1)
    bodies = [_npy(rng.random((1, *shape), dtype=np.float32)) for _ in range(256)]

    servers = {name: Server(export_dir, workdir, name, [f"serve.variant={variant}", "serve.cache.enabled=false", *o])
               for name, o in ARMS.items()}
    results: dict = {"variant": variant, "variant_reason": chosen.reason, "slo_ms": SLO_MS, "quick": q}
    try:
        for s in servers.values():
            s.wait_ready()
        # 1. open-loop sweep, interleaved by rate step
        sweep: dict = {name: [] for name in servers}
        over = {name: 0 for name in servers}
        for rate in rates:
            for name, s in servers.items():
                if over[name] >= 1:
                    continue
                r = asyncio.run(_open_loop(s, rate, step_s, bodies, seed=rate))
                sweep[name].append(r)
                print(f"  {name:16s} rate {rate:5d}/s: {r['throughput']:7.1f}/s ok, p50 {r['p50_ms']:7.1f} ms, "
                      f"p99 {r['p99_ms']:8.1f} ms, codes {r['codes']}", flush=True)
                if r["throughput"] < 0.9 * rate or r["ok"] < r["sent"]:  # saturated: stop this arm
                    over[name] += 1
            if all(v >= 1 for v in over.values()):
                break
        at_slo = {name: max([r["throughput"] for r in rs if r["p99_ms"] <= SLO_MS and r["ok"] == r["sent"]] or [0.0])
                  for name, rs in sweep.items()}
        sustained = {name: max([r["throughput"] for r in rs if r["throughput"] >= 0.9 * r["rate"] and r["ok"] == r["sent"]]
                               or [0.0]) for name, rs in sweep.items()}
        results["sweep"], results["throughput_at_slo"], results["max_sustained"] = sweep, at_slo, sustained
        # 2. one client
        single = {name: one_client(s, bodies, one_n) for name, s in servers.items()}
        results["one_client"] = single
        # 5. the cost gauge (adaptive server: it has run the longest mixed load by now)
        s = servers["ours_adaptive"]
        m = metrics_of(s)
        now = time.time()
        expected = PRICE / 3600 * (now - s.launched) / s.answered * 1000
        results["usd_metric"] = {"reported": m["serve_usd_per_1k_predictions"], "expected": expected,
                                 "rel_err": abs(m["serve_usd_per_1k_predictions"] - expected) / expected,
                                 "predictions_server": m["serve_predictions_total"], "predictions_bench": s.answered}
    finally:
        for s in servers.values():
            s.stop()
    # 3. cache sweep: cache on vs off, same streams
    cache_on = Server(export_dir, workdir, "cache_on", [f"serve.variant={variant}", "serve.batching=adaptive"])
    cache_off = Server(export_dir, workdir, "cache_off", [f"serve.variant={variant}", "serve.batching=adaptive",
                                                          "serve.cache.enabled=false"])
    try:
        cache_on.wait_ready()
        cache_off.wait_ready()
        p50s: dict = {"on": [], "off": []}
        for which in ("off", "on", "on", "off"):  # ABBA, distinct inputs each time: every request is a miss
            fresh = [_npy(rng.random((1, *shape), dtype=np.float32)) for _ in range(one_n // 2)]
            p50s[which].append(one_client(cache_on if which == "on" else cache_off, fresh, one_n // 2)["p50_ms"])
        p50_on, p50_off = float(np.mean(p50s["on"])), float(np.mean(p50s["off"]))
        results["cache_miss_p50"] = {"cache_on_ms": p50_on, "cache_off_ms": p50_off, "added": p50_on / p50_off - 1}
        cache = []
        for h in (0.0, 0.2, 0.5, 0.8):
            runs = {"on": [], "off": []}
            for i, which in enumerate(("off", "on", "on", "off")):  # ABBA: the machine's load drifts
                stream = zipf_stream(4000, h, shape, seed=int(h * 100) * 10 + i)  # fresh inputs: no hits across runs
                runs[which].append(closed_loop(cache_on if which == "on" else cache_off, stream, 8, cache_s / 2))
            on = {k: float(np.mean([r[k] for r in runs["on"]])) for k in runs["on"][0]}
            off = {k: float(np.mean([r[k] for r in runs["off"]])) for k in runs["off"][0]}
            cache.append({"target_hit_rate": h, "hit_rate": on["hit_rate"], "on": on["throughput"],
                          "off": off["throughput"], "ratio": on["throughput"] / off["throughput"],
                          "target_ratio": 0.9 / (1 - h)})
            print(f"  cache h={h:.1f}: measured hits {on['hit_rate']:.2f}, {on['throughput']:.1f}/s vs "
                  f"{off['throughput']:.1f}/s off ({cache[-1]['ratio']:.2f}x; target {0.9 / (1 - h):.2f}x)", flush=True)
        results["cache"] = cache
    finally:
        cache_on.stop()
        cache_off.stop()
    # 4. drain rounds
    rounds = [drain_round(export_dir, workdir, variant) for _ in range(drains)]
    results["drain"] = {"rounds": len(rounds), "lost": sum(r["lost"] for r in rounds),
                        "exit_codes": sorted({r["rc"] for r in rounds}), "max_exit_s": max(r["exit_s"] for r in rounds),
                        "answered": sum(r["answered"] for r in rounds), "detail": rounds}
    results["wall_s"] = time.time() - t_start

    u, st, ours = at_slo["unbatched"], at_slo["litserve_static"], at_slo["ours_adaptive"]
    su, sst, sours = sustained["unbatched"], sustained["litserve_static"], sustained["ours_adaptive"]
    one = results["one_client"]
    targets = [
        ("ours >= 2x unbatched throughput at p99<=50ms", ours > 0 and ours >= 2 * u, _ratio(ours, u)),
        ("ours >= 1.2x LitServe static at p99<=50ms", ours > 0 and ours >= 1.2 * st, _ratio(ours, st)),
        ("(info) max sustained throughput, any p99: ours vs unbatched / vs static", sours >= 2 * su and sours >= 1.2 * sst,
         f"{sours:.0f} vs {su:.0f} / {sst:.0f} req/s = {sours / max(su, 1e-9):.2f}x / {sours / max(sst, 1e-9):.2f}x"),
        ("one-client p99 within 10% of unbatched", one["ours_adaptive"]["p99_ms"] <= 1.1 * one["unbatched"]["p99_ms"],
         f"{one['ours_adaptive']['p99_ms']:.2f} vs {one['unbatched']['p99_ms']:.2f} ms"),
        ("cache miss adds <= 3% to p50", results["cache_miss_p50"]["added"] <= 0.03,
         f"{results['cache_miss_p50']['added'] * 100:+.1f}%"),
        *[(f"cache h={c['target_hit_rate']:.1f}: throughput >= {c['target_ratio']:.2f}x no cache",
           c["ratio"] >= c["target_ratio"], f"{c['ratio']:.2f}x (hits {c['hit_rate']:.2f})") for c in results["cache"]],
        (f"0 accepted requests lost across {len(rounds)} SIGTERMs", results["drain"]["lost"] == 0
         and results["drain"]["exit_codes"] == [0], f"lost {results['drain']['lost']:.0f}, exit codes "
         f"{results['drain']['exit_codes']}, slowest exit {results['drain']['max_exit_s']:.1f} s"),
        ("serve_usd_per_1k_predictions within 1%", results["usd_metric"]["rel_err"] <= 0.01,
         f"{results['usd_metric']['reported']:.6f} vs {results['usd_metric']['expected']:.6f} "
         f"({results['usd_metric']['rel_err'] * 100:.2f}%)"),
    ]
    results["targets"] = [{"target": t, "met": bool(ok), "figure": f} for t, ok, f in targets]
    print("\n| arm | throughput at p99<=50ms (req/s) | max sustained (req/s, its p99 ms) | one-client p50 / p99 (ms) |"
          "\n| --- | --- | --- | --- |")
    for name in servers:
        best = max((r for r in sweep[name] if r["throughput"] >= 0.9 * r["rate"] and r["ok"] == r["sent"]),
                   key=lambda r: r["throughput"], default={"p99_ms": float("nan")})
        print(f"| {name} | {at_slo[name]:.0f} | {sustained[name]:.0f} ({best['p99_ms']:.0f}) | "
              f"{one[name]['p50_ms']:.2f} / {one[name]['p99_ms']:.2f} |")
    print("\n| target | met | figure |\n| --- | --- | --- |")
    for t in results["targets"]:
        print(f"| {t['target']} | {'yes' if t['met'] else 'NO'} | {t['figure']} |")
    print(f"\nwall {results['wall_s']:.0f} s; logs in {workdir}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
