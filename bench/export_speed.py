"""ORT INT8 vs ORT fp32 vs torch eager fp32: latency, size, accuracy, side by side in one run.

    uv run python -m bench.export_speed [--quick] [--threads 1,2]

Two models: the default recipe's model (ResNet-18, 1x32x32, trained on digits, exported with
``mlcost_pl.export.export`` so the accuracy gate and calibration are the real ones) and torchvision ResNet-18 at
3x224x224 (random init, no download; calibrated on random images, so only its speed and size mean anything).
Timings interleave the variants round by round (several repeats), and report medians of per-round p50s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")


def _train_digits(epochs: int):
    from mlcost_pl.data import DigitsDataModule
    from mlcost_pl.models import ImageClassifier
    from tests.helpers.plain_fit import plain_fit

    dm = DigitsDataModule(image_size=32, batch_size=64)
    torch.manual_seed(0)
    return plain_fit(ImageClassifier("resnet18", num_classes=10, in_channels=1), dm, epochs, lr=2e-3), dm


def _round(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def _measure(runners: dict, shape: tuple, batch_sizes: list[int], repeats: int, iters: int) -> dict:
    out: dict = {name: {} for name in runners}
    for b in batch_sizes:
        x = torch.randn(b, *shape)
        for fn in runners.values():  # warm-up
            fn(x)
        rounds: dict = {name: [] for name in runners}
        for _ in range(repeats):
            for name, fn in runners.items():  # interleaved
                rounds[name].append(_round(lambda fn=fn: fn(x), iters))
        for name in runners:
            out[name][b] = float(np.median(rounds[name]))
    return out


def _runners(model, fp32_path, int8_path, threads: int) -> dict:
    from mlcost_pl.export.onnx_export import ort_session

    torch.set_num_threads(threads)
    s32, s8 = ort_session(fp32_path, threads), ort_session(int8_path, threads)

    def eager(x):
        with torch.inference_mode():
            return model(x)

    return {
        "torch_fp32": eager,
        "ort_fp32": lambda x: s32.run(None, {"input": x.numpy()}),
        "ort_int8": lambda x: s8.run(None, {"input": x.numpy()}),
    }


def _print(title: str, lat: dict, batch_sizes: list[int], sizes: dict) -> None:
    print(f"\n### {title}")
    print("| variant | " + " | ".join(f"p50 ms @{b}" for b in batch_sizes) + " | MB |")
    print("| --- | " + " | ".join("---" for _ in batch_sizes) + " | --- |")
    for name, row in lat.items():
        print(f"| {name} | " + " | ".join(f"{row[b]:.2f}" for b in batch_sizes) + f" | {sizes.get(name, 0) / 1e6:.2f} |")
    for b in batch_sizes:
        print(f"batch {b}: ORT INT8 is {lat['torch_fp32'][b] / lat['ort_int8'][b]:.2f}x faster than torch eager fp32, "
              f"{lat['ort_fp32'][b] / lat['ort_int8'][b]:.2f}x vs ORT fp32 "
              f"(ORT fp32 {lat['torch_fp32'][b] / lat['ort_fp32'][b]:.2f}x vs torch)")
    print(f"size: ONNX fp32 / INT8 = {sizes['ort_fp32'] / sizes['ort_int8']:.2f}x; "
          f"torch state_dict / INT8 = {sizes['torch_fp32'] / sizes['ort_int8']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 training epochs (not 8), fewer repeats")
    parser.add_argument("--epochs", type=int, default=None, help="digits training epochs (default 4 quick, 8 full)")
    parser.add_argument("--models", default="digits,resnet18", help="which of digits,resnet18 to measure")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts for every runtime")
    args = parser.parse_args()
    repeats, iters = (3, 5) if args.quick else (5, 20)
    batch_sizes = [1, 8, 32]
    threads_list = [int(t) for t in args.threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="export_speed-"))
    try:
        from mlcost_pl.export import export
        from mlcost_pl.export.onnx_export import param_bytes
        from mlcost_pl.export.quantize import choose_quant_types

        print(f"CPU flags: {choose_quant_types().cpu['flags']}; quantization: {choose_quant_types().reason}")
        torch.set_num_threads(1)
        t = time.perf_counter()
        model, dm = _train_digits(args.epochs or (4 if args.quick else 8))
        print(f"digits ResNet-18 trained in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        report = export(model, dm, work / "digits", latency_iters=2, batch_sizes=(1,))
        print(f"export() in {time.perf_counter() - t:.0f} s; gate: {report['gate']['metric']} fp32 "
              f"{report['gate']['fp32']:.4f} -> INT8 {report['gate']['quantized']:.4f} "
              f"(drop {100 * report['gate']['drop']:.2f} points, {len(report['gate']['kept_fp32'])} layers kept fp32)")
        cases = [("default digits model: ResNet-18 1x32x32", model, (1, 32, 32), work / "digits" / "model.onnx",
                  work / "digits" / "model.int8.onnx")]

        if "digits" not in args.models:
            cases = []
        if "resnet18" in args.models:
            cases.append(_resnet224(work))
        for title, net, shape, p32, p8 in cases:
            sizes = {"torch_fp32": param_bytes(net), "ort_fp32": os.path.getsize(p32), "ort_int8": os.path.getsize(p8)}
            for threads in threads_list:
                lat = _measure(_runners(net, p32, p8, threads), shape, batch_sizes, repeats, iters)
                _print(f"{title}, {threads} thread(s)", lat, batch_sizes, sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resnet224(work: Path):
    """torchvision ResNet-18 (random init, no download), exported and INT8-quantized on random calibration."""
    import torchvision

    from mlcost_pl.export.onnx_export import export_onnx
    from mlcost_pl.export.quantize import choose_quant_types, quantize_static

    rn = torchvision.models.resnet18(num_classes=1000).eval()
    (work / "rn").mkdir()
    export_onnx(rn, torch.randn(2, 3, 224, 224), work / "rn" / "model.onnx")
    calib = [np.random.default_rng(i).standard_normal((8, 3, 224, 224)).astype(np.float32) for i in range(4)]
    quantize_static(work / "rn" / "model.onnx", work / "rn" / "model.int8.onnx", calib, choose_quant_types())
    return ("torchvision ResNet-18 3x224x224", rn, (3, 224, 224), work / "rn" / "model.onnx",
            work / "rn" / "model.int8.onnx")


if __name__ == "__main__":
    main()
