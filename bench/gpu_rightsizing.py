"""Right-sizing on a CUDA GPU: AMP speed/memory, 8-bit optimizer state, and a real-OOM max_fit search.

    uv run python -m bench.gpu_rightsizing [--quick]

1. ResNet-50 (torchvision, random init, 224x224 synthetic images, batch 64, AdamW): training step time and peak
   memory at ``32-true`` vs ``bf16-mixed`` (what ``precision=auto`` picks on sm_80+), interleaved repeats, medians and
   the ratio.
2. Optimizer-state memory of ResNet-50 after one step: ``torch.optim.AdamW`` vs ``mlcost_pl.optim.adamw8bit``.
3. ``BatchSizeSearch(mode="max_fit")`` on ResNet-50 under ``bf16-mixed`` with no memory budget: trials run into real
   ``torch.OutOfMemoryError``; prints the batch found, trials, seconds, and the peak memory of one step at that size.

Exits with a message (status 1) when no CUDA GPU is visible: there is nothing meaningful to measure on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

NO_GPU = "bench.gpu_rightsizing needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); not run."


def _resnet50():
    import torchvision

    return torchvision.models.resnet50(num_classes=1000).cuda().to(memory_format=torch.channels_last)


def _step_time_and_peak(model, opt, x, y, autocast_dtype, steps: int) -> tuple[float, float]:
    times = []
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):  # two warm-up steps
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def amp_part(repeats: int, steps: int, batch: int) -> None:
    from mlcost_pl.precision import resolve_precision

    precision, reason = resolve_precision("auto", accelerator="gpu")
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    res: dict[str, list[tuple[float, float]]] = {"32-true": [], "bf16-mixed": []}
    for r in range(repeats):
        for name in (res if r % 2 == 0 else reversed(list(res))):
            torch.manual_seed(0)
            model = _resnet50()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            res[name].append(_step_time_and_peak(model, opt, x, y, torch.bfloat16 if name == "bf16-mixed" else None, steps))
            del model, opt
            torch.cuda.empty_cache()
    print(f"\n## AMP: ResNet-50, batch {batch}, 224x224, AdamW on {torch.cuda.get_device_name()}")
    print(f"precision=auto picks {precision} ({reason})")
    print("| precision | median step s | samples/s | peak GiB |")
    print("| --- | --- | --- | --- |")
    med = {k: (statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in res.items()}
    for k, (t, m) in med.items():
        print(f"| {k} | {t:.4f} | {batch / t:.0f} | {m:.2f} |")
    print(f"bf16-mixed speed-up {med['32-true'][0] / med['bf16-mixed'][0]:.2f}x, memory {med['bf16-mixed'][1] / med['32-true'][1]:.2f}x")


def optimizer_state_part() -> None:
    from mlcost_pl.optim import adamw8bit
    from mlcost_pl.rightsizing.memory import unique_bytes

    print("\n## Optimizer state: ResNet-50 after one step")
    print("| optimizer | state MiB | params MiB |")
    print("| --- | --- | --- |")
    out = {}
    for name, factory in (("AdamW", lambda p: torch.optim.AdamW(p, lr=1e-3)), ("AdamW8bit", lambda p: adamw8bit(p, lr=1e-3))):
        torch.manual_seed(0)
        model = _resnet50()
        opt = factory(model.parameters())
        x = torch.randn(8, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
        torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long, device="cuda")).backward()
        opt.step()
        state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        out[name] = unique_bytes(state) / 2**20
        print(f"| {name} | {out[name]:.1f} | {unique_bytes(model.parameters()) / 2**20:.1f} |")
        del model, opt
        torch.cuda.empty_cache()
    print(f"AdamW8bit state = {out['AdamW8bit'] / out['AdamW']:.2f}x AdamW's")


def max_fit_part(max_batch: int) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from mlcost_pl.callbacks import BatchSizeSearch

    class ResNet50Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _resnet50()
            self.batch_size = 32
            self.data = TensorDataset(torch.randn(256, 3, 224, 224), torch.randint(0, 1000, (256,)))

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self.net(batch[0].to(memory_format=torch.channels_last)), batch[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=self.batch_size)

    model = ResNet50Module()
    cb = BatchSizeSearch(mode="max_fit", init_batch_size=64, max_batch_size=max_batch, use_cache=False, max_trials=16)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=0, callbacks=[cb], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    ooms = sum(1 for _, ok in cb.result.trials if not ok)
    print(f"\n## Real-OOM max_fit: ResNet-50, bf16-mixed, AdamW on {torch.cuda.get_device_name()}")
    print(f"trials {cb.result.trials}")
    print(f"batch found {cb.result.batch_size} (largest fit {cb.result.largest_fit}), {cb.result.num_trials} trials "
          f"({ooms} real OOMs), {cb.metrics['batch_size_search/search_s']:.1f}s; "
          f"card {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 repeats of 10 steps instead of 5 of 20")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=4096, help="upper bound of the real-OOM search")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit(NO_GPU)
    warnings.filterwarnings("ignore")
    torch.backends.cudnn.benchmark = True
    amp_part(3 if args.quick else 5, 10 if args.quick else 20, args.batch)
    optimizer_state_part()
    max_fit_part(args.max_batch)


if __name__ == "__main__":
    main()
