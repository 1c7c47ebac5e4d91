"""Bytes all-reduced per DDP step with each gradient-compression hook: ``uv run python -m bench.comm_hooks [--quick]``.

Two real gloo ranks on 127.0.0.1 (``torch.multiprocessing``, one CPU thread each) train torchvision's ResNet-18
(10 classes, 3x32x32 inputs) under ``DistributedDataParallel`` with each hook of :mod:`mlcost_pl.distributed.comm_hooks`
registered exactly as ``CompressedDDPStrategy`` registers it. Each rank counts the bytes of every tensor handed to
``torch.distributed.all_reduce``/``all_gather`` during measured steps (the hooks call these; DDP's built-in C++
all-reduce does not, so the uncompressed baseline is torch's ``allreduce_hook``, the same all-reduce in Python).
PowerSGD starts compressing after 2 steps; 2 warm-up steps are not measured. All gradients go in one DDP bucket (see
``GLOO_BUCKET_MB``). Repeats interleave the hooks; medians.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HOOKS = ("none", "fp16", "bf16", "powersgd")
# One gradient bucket, for every hook alike: PowerSGD's chained all-reduces of several buckets can be issued in a
# different order on each rank by gloo's worker threads (a collective mismatch); CompressedDDPStrategy does the same.
GLOO_BUCKET_MB = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ByteCounter:
    """Counts bytes passed to ``dist.all_reduce`` / ``dist.all_gather`` while installed (per rank)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._orig: dict[str, Any] = {}

    def __enter__(self) -> ByteCounter:
        def counting(name: str):
            orig = getattr(dist, name)
            self._orig[name] = orig

            def wrapper(tensor, *args, **kwargs):
                if name == "all_reduce":
                    self.bytes += tensor.numel() * tensor.element_size()
                else:  # all_gather(output_list, input): one input tensor goes out
                    src = args[0]
                    self.bytes += src.numel() * src.element_size()
                return orig(tensor, *args, **kwargs)

            setattr(dist, name, wrapper)

        counting("all_reduce")
        counting("all_gather")
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._orig.items():
            setattr(dist, name, orig)


def build_model(name: str) -> torch.nn.Module:
    """A torchvision classifier by name (10 classes), or ``mlp``: a small MLP for quick tests."""
    if name == "mlp":
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    import torchvision

    return getattr(torchvision.models, name)(num_classes=10)


def train_steps(rank: int, world: int, port: int, hooks: list[str], model_name: str, batch: int, warmup: int, steps: int, out: Any) -> None:
    """One rank: for each hook in turn, DDP on a fresh ``model_name``; rank 0 puts ``{hook: (bytes/step, median step s)}``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel as DDP

        from mlcost_pl.distributed.comm_hooks import comm_hook

        results: dict[str, tuple[float, float]] = {}
        nparams = 0
        for hook in hooks:
            torch.manual_seed(0)
            model = DDP(build_model(model_name), bucket_cap_mb=GLOO_BUCKET_MB)
            state, fn = comm_hook(hook, powersgd_rank=2, powersgd_start_iter=2) if hook != "none" else (None, default_hooks.allreduce_hook)
            model.register_comm_hook(state, fn)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            gen = torch.Generator().manual_seed(rank)
            x = torch.randn(batch, 3, 32, 32, generator=gen)
            y = torch.randint(0, 10, (batch,), generator=gen)
            times = []
            with ByteCounter() as counter:
                for i in range(warmup + steps):
                    if i == warmup:
                        counter.bytes = 0
                    start = time.perf_counter()
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
            results[hook] = (counter.bytes / steps, statistics.median(times))
            nparams = sum(p.numel() for p in model.parameters())
        if rank == 0:
            out.put((results, nparams))
    finally:
        dist.destroy_process_group()


def run_hooks(hooks: list[str], model_name: str, batch: int, warmup: int, steps: int, world: int = 2) -> tuple[dict[str, tuple[float, float]], int]:
    """Spawn ``world`` gloo ranks on 127.0.0.1 and measure ``hooks`` in order: ``({hook: (bytes/step, step s)}, params)``."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=train_steps, args=(r, world, port, hooks, model_name, batch, warmup, steps, out)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        result = out.get(timeout=600)
    finally:
        for p in procs:
            p.join(120)
            if p.is_alive():
                p.kill()
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 measured steps")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8, help="per-rank batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    repeats, steps = (1, 3) if args.quick else (args.repeats, 5)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, list[tuple[float, float]]] = {h: [] for h in HOOKS}
    nparams = 0
    for rep in range(repeats):
        order = list(HOOKS) if rep % 2 == 0 else list(reversed(HOOKS))  # interleaved, alternating order
        measured, nparams = run_hooks(order, args.model, args.batch, warmup=2, steps=steps)
        for hook, (nbytes, step_s) in measured.items():
            results[hook].append((nbytes, step_s))
    base = statistics.median(b for b, _ in results["none"])
    print(f"{args.model}: {nparams:,} parameters = {nparams * 4 / 1e6:.1f} MB of fp32 gradients; 2 gloo ranks on loopback, "
          f"batch {args.batch}/rank, {repeats} repeat(s) x {steps} steps")
    print(f"{'hook':<10} {'MB all-reduced/step':>20} {'vs none':>8} {'step s (median)':>16}")
    summary = {}
    for hook in HOOKS:
        nbytes = statistics.median(b for b, _ in results[hook])
        step_s = statistics.median(s for _, s in results[hook])
        summary[hook] = {"bytes_per_step": nbytes, "step_s": step_s, "ratio": nbytes / base}
        print(f"{hook:<10} {nbytes / 1e6:>20.2f} {nbytes / base:>8.3f} {step_s:>16.3f}")
    return summary


if __name__ == "__main__":
    main()
