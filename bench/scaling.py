"""What another node buys: ``uv run python -m bench.scaling [--quick]``.

1. The scaling model (:class:`mlcost_pl.distributed.ScalingModel`: ring all-reduce ``2(n-1)/n x bytes / bandwidth``,
   overlapped with backward as DDP buckets do) for ResNet-18 and ResNet-50 on ImageNet-1k (1,281,167 images per
   epoch, batch 256 per node) on a 25 Gb/s and a 100 Gb/s link: step time, speedup, efficiency and $ per epoch vs node
   count, the node count with the lowest $ per epoch and the fastest within a budget. The single-node step times are
   INPUTS (``--step-s-resnet18/50``; defaults are one A10G with AMP, ~2,100 and ~780 images/s), the price is the
   catalog's ``--instance`` on ``--market``; gradient bytes are the models' fp32 parameter bytes.
2. The cross-check, measured here: ResNet-18 (10 classes, 3x32x32, batch 8 per rank, one CPU thread per rank) step time
   on 1 process and under DDP on 2 gloo ranks over loopback, and the loopback all-reduce bandwidth; the model predicts
   the 2-rank step from the 1-rank step, gradient bytes and that bandwidth; measured / predicted is printed.
   On a machine with fewer than 2 free cores the 2 ranks also compete for compute, which the model does not include.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.comm_hooks import free_port, run_hooks
from mlcost_pl.cost.catalog import PriceCatalog
from mlcost_pl.distributed.scaling import ScalingModel

IMAGENET = 1_281_167
PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}  # torchvision, 1000 classes


def _allreduce_worker(rank: int, world: int, port: int, numel: int, repeats: int, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        t = torch.ones(numel)
        dist.all_reduce(t)  # connect, warm up
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        if rank == 0:
            out.put(statistics.median(times))
    finally:
        dist.destroy_process_group()


def loopback_bandwidth_gbps(nbytes: int, repeats: int) -> float:
    """Effective ring bandwidth of a 2-rank gloo all-reduce of ``nbytes`` on 127.0.0.1 (each rank moves ``nbytes``)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_allreduce_worker, args=(r, 2, port, nbytes // 4, repeats, out)) for r in range(2)]
    for p in procs:
        p.start()
    seconds = out.get(timeout=600)
    for p in procs:
        p.join(60)
    return 2 * (2 - 1) / 2 * nbytes * 8 / seconds / 1e9


def print_table(title: str, model: ScalingModel, nodes: list[int], budget_usd: float, epochs: float) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"{'nodes':>5} {'step s':>7} {'comm s':>7} {'exposed s':>9} {'speedup':>8} {'effic.':>7} {'epoch min':>9} {'$/epoch':>8}")
    for p in model.table(nodes):
        print(f"{p.nodes:>5} {p.step_s:>7.3f} {p.comm_s:>7.3f} {p.exposed_comm_s:>9.3f} {p.speedup:>8.2f} {p.efficiency:>7.2f} "
              f"{p.epoch_s / 60:>9.1f} {p.usd_per_epoch:>8.3f}")
    cheap = model.cheapest(nodes)
    fast = model.fastest_within(nodes, budget_usd, epochs)
    fast_txt = f"{fast.nodes} nodes ({fast.epoch_s * epochs / 3600:.1f} h, ${fast.usd_per_epoch * epochs:.2f})" if fast else "none fits"
    print(f"cheapest per epoch: {cheap.nodes} node(s), ${cheap.usd_per_epoch:.3f}; fastest within ${budget_usd:g} for {epochs:g} epochs: {fast_txt}")
    return {"cheapest": cheap.nodes, "fastest_within_budget": fast.nodes if fast else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer measured steps and repeats in the cross-check")
    parser.add_argument("--instance", default="g5.xlarge", help="catalog instance = one node")
    parser.add_argument("--market", default="spot", choices=["spot", "on_demand"])
    parser.add_argument("--step-s-resnet18", type=float, default=256 / 2100)
    parser.add_argument("--step-s-resnet50", type=float, default=256 / 780)
    parser.add_argument("--bandwidths", type=float, nargs="+", default=[25.0, 100.0], help="link Gb/s")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--latency-us", type=float, default=30.0, help="per-hop ring latency (TCP between nodes: tens of us)")
    parser.add_argument("--epochs", type=float, default=90)
    parser.add_argument("--budget-usd", type=float, default=20.0)
    parser.add_argument("--skip-measure", action="store_true", help="print the model tables only")
    args = parser.parse_args(argv)

    price = PriceCatalog.bundled().lookup(args.instance).price(args.market)
    if price is None:
        raise SystemExit(f"error: ValueError: --instance {args.instance} has no {args.market} price in the catalog")
    out: dict[str, Any] = {"tables": {}}
    for name, step_s in (("resnet18", args.step_s_resnet18), ("resnet50", args.step_s_resnet50)):
        for bw in args.bandwidths:
            model = ScalingModel(step_s=step_s, grad_bytes=PARAMS[name] * 4, bandwidth_gbps=bw, samples_per_epoch=IMAGENET,
                                 batch_per_node=256, usd_per_node_hour=price, latency_s=args.latency_us * 1e-6)
            title = (f"{name}: {PARAMS[name] * 4 / 1e6:.1f} MB gradients, {step_s:.3f} s/step on one node "
                     f"({args.instance} {args.market} ${price}/h), {bw:g} Gb/s link, {args.latency_us:g} us/hop")
            out["tables"][f"{name}@{bw:g}"] = print_table(title, model, args.nodes, args.budget_usd, args.epochs)

    if args.skip_measure:
        return out
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    repeats, steps = (1, 4) if args.quick else (3, 8)
    one, two = [], []
    nparams = 0
    for _ in range(repeats):  # interleaved
        r1, nparams = run_hooks(["none"], "resnet18", batch=8, warmup=2, steps=steps, world=1)
        r2, _ = run_hooks(["none"], "resnet18", batch=8, warmup=2, steps=steps, world=2)
        one.append(r1["none"][1])
        two.append(r2["none"][1])
    grad_bytes = nparams * 4
    bw = loopback_bandwidth_gbps(grad_bytes, repeats=3 if args.quick else 7)
    t1, t2 = statistics.median(one), statistics.median(two)
    model = ScalingModel(step_s=t1, grad_bytes=grad_bytes, bandwidth_gbps=bw, samples_per_epoch=1, batch_per_node=1, usd_per_node_hour=0.0)
    predicted = model.predict(2).step_s
    print(f"\ncross-check (ResNet-18, 10 classes, {grad_bytes / 1e6:.1f} MB gradients, batch 8/rank, 1 thread/rank, "
          f"{repeats} repeat(s) x {steps} steps): loopback all-reduce {bw:.2f} Gb/s")
    print(f"1 process {t1:.3f} s/step; 2 gloo ranks measured {t2:.3f} s/step, predicted {predicted:.3f} s/step; "
          f"measured/predicted {t2 / predicted:.2f}; measured speedup {2 * t1 / t2:.2f} vs predicted {2 * t1 / predicted:.2f} (of 2)")
    out["cross_check"] = {"t1": t1, "t2": t2, "predicted": predicted, "bandwidth_gbps": bw}
    return out


if __name__ == "__main__":
    main()
