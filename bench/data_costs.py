"""Data costs side by side: stored bytes, streaming throughput, and a cold vs warm feature store.

    uv run python -m bench.data_costs [--quick]

One process, four parts (the arms of each part interleaved per repeat; medians and ratios printed at the end):

1. **dataset bytes**: the bundled digits as the DataModule feeds them (float32 tensors, 32x32) vs optimized with
   litdata + zstd keeping float32 (lossless compression alone) vs our storage-aware uint8 + zstd.
2. **feature bytes and accuracy**: fp32 ResNet-18 backbone features of the digits, stored float32 raw vs float32 +
   zstd vs float16 + zstd vs int8 + zstd; a linear head is trained on each decoded copy and its validation accuracy
   compared with the fp32 one (the lossy dtypes' accuracy effect).
3. **training samples/s** of the default recipe (ResNet-18, 32x32, batch 64) fed from memory (DigitsDataModule), from
   a local litdata stream and from a moto S3 server on loopback (same process, plain HTTP, ``allow_http=True``).
4. **feature store**: the fine-tune (digits 5-9, frozen ResNet-18 backbone, ``FreezeBackbone(cache_features=<dir>)``)
   with an empty store (cold) vs the same store filled by the cold run (warm): wall time of the same epochs and the
   validation accuracy each reaches.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import TensorDataset

from mlcost_pl.callbacks import FreezeBackbone
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.data.optimize import optimize_datamodule
from mlcost_pl.data.streaming import StreamingDataModule
from mlcost_pl.models import ImageClassifier

S3_CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


class _Splits:
    """A minimal DataModule stand-in over in-memory tensors (what optimize_datamodule reads)."""

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> None:
        self.splits, self.num_classes = splits, num_classes

    def setup(self, stage: str | None = None) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        split = name.removesuffix("_dataloader")
        if split in ("train", "val", "test"):
            return lambda: torch.utils.data.DataLoader(TensorDataset(*self.splits[split]))
        raise AttributeError(name)


class _EpochClock(Callback):
    def __init__(self) -> None:
        self.seconds, self.samples, self._t = 0.0, 0, 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds += time.perf_counter() - self._t


def _trainer(**kw: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kw)


# ---------------------------------------------------------------------------------------------------- 1. dataset bytes
def dataset_bytes(tmp: Path, image_size: int) -> dict[str, float]:
    out = {}
    for name, dtype in (("float32_zstd", "float32"), ("uint8_zstd", "uint8")):
        m = optimize_datamodule(DigitsDataModule(image_size=image_size), str(tmp / f"digits-{name}"), image_dtype=dtype)
        out["raw"] = m.raw_bytes
        out[name] = m.stored_bytes
    return out


# ---------------------------------------------------------------------------------------------------- 2. features
def backbone_features(image_size: int) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    dm = DigitsDataModule(image_size=image_size)
    dm.setup()
    torch.manual_seed(0)
    backbone = ImageClassifier("resnet18", num_classes=10, in_channels=1).backbone.eval()
    splits, start = {}, time.perf_counter()
    with torch.no_grad():
        for split, ds in (("train", dm.data_train), ("val", dm.data_val), ("test", dm.data_test)):
            x, y = ds.tensors
            splits[split] = (torch.cat([backbone(x[i : i + 256]) for i in range(0, len(x), 256)]), y)
    return splits, time.perf_counter() - start


def _head_accuracy(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], steps: int) -> float:
    torch.manual_seed(0)
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6
    head = torch.nn.Linear(train[0].shape[1], 10)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    x = (train[0] - mean) / std
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), train[1]).backward()
        opt.step()
    with torch.no_grad():
        return float((head((val[0] - mean) / std).argmax(1) == val[1]).float().mean())


def feature_costs(tmp: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], steps: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, dtype, compression in (("float32_raw", "float32", None), ("float32_zstd", "float32", "zstd"),
                                     ("float16_zstd", "float16", "zstd"), ("int8_zstd", "int8", "zstd")):
        uri = str(tmp / f"features-{name}")
        m = optimize_datamodule(_Splits(splits, 10), uri, feature_dtype=dtype, compression=compression)
        stream = StreamingDataModule(uri, batch_size=4096, shuffle=False)
        decoded = {s: next(iter(getattr(stream, f"{s}_dataloader")())) for s in ("train", "val")}
        out[name] = {"raw": m.raw_bytes, "stored": m.stored_bytes, "acc": _head_accuracy(decoded["train"], decoded["val"], steps)}
    return out


# ---------------------------------------------------------------------------------------------------- 3. samples/s
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput_arm(arm: str, args: argparse.Namespace, local_uri: str, s3: dict[str, Any]) -> float:
    if arm == "memory":
        dm: Any = DigitsDataModule(image_size=args.image_size, batch_size=64)
    elif arm == "local_stream":
        dm = StreamingDataModule(local_uri, batch_size=64)
    else:
        dm = StreamingDataModule(s3["uri"], batch_size=64, cache_dir=tempfile.mkdtemp(dir=args.tmp), max_cache_size="1GB",
                                 endpoint_url=s3["endpoint"], storage_options=S3_CREDS, allow_http=True)
    L.seed_everything(0, verbose=False)
    model = ImageClassifier("resnet18", num_classes=10, in_channels=1)
    clock = _EpochClock()
    _trainer(max_epochs=1, limit_train_batches=args.batches, limit_val_batches=0, callbacks=[clock]).fit(model, datamodule=dm)
    return clock.samples / clock.seconds


# ---------------------------------------------------------------------------------------------------- 4. feature store
def finetune_arm(store: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    model = ImageClassifier("resnet18", num_classes=5, in_channels=1, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))
    trainer = _trainer(max_epochs=args.ft_epochs, callbacks=[FreezeBackbone(cache_features=store)])
    start = time.perf_counter()
    trainer.fit(model, datamodule=DigitsDataModule(image_size=args.image_size, batch_size=64, classes=[5, 6, 7, 8, 9]))
    return {"seconds": time.perf_counter() - start, "acc": float(trainer.callback_metrics.get("val/acc", float("nan"))),
            "misses": float(trainer.callback_metrics["feature_store/misses"])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, epochs and repeats")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per throughput arm")
    parser.add_argument("--ft-epochs", type=int, default=4)
    parser.add_argument("--head-steps", type=int, default=300)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.ft_epochs, args.head_steps = 2, 8, 3, 200
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        args.tmp = tmp_dir

        sizes = dataset_bytes(tmp, args.image_size)
        results["dataset"] = sizes
        feats, feat_s = backbone_features(args.image_size)
        results["features"] = feature_costs(tmp, feats, args.head_steps)

        from moto.server import ThreadedMotoServer
        import boto3

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            boto3.client("s3", endpoint_url=endpoint, **S3_CREDS).create_bucket(Bucket="bench-data")
            s3 = {"endpoint": endpoint, "uri": "s3://bench-data/digits"}
            optimize_datamodule(DigitsDataModule(image_size=args.image_size), s3["uri"], endpoint_url=endpoint,
                                storage_options=S3_CREDS, allow_http=True)
            local_uri = str(tmp / "digits-uint8_zstd")
            arms = ("memory", "local_stream", "s3_stream")
            tput: dict[str, list[float]] = {a: [] for a in arms}
            for r in range(args.repeats):
                for arm in arms[r % 3:] + arms[: r % 3]:  # rotate the order per repeat
                    tput[arm].append(throughput_arm(arm, args, local_uri, s3))
        finally:
            server.stop()
        results["samples_per_s"] = {a: statistics.median(v) for a, v in tput.items()}

        ft: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        for r in range(args.repeats):
            store = str(tmp / f"store-{r}")
            ft["cold"].append(finetune_arm(store, args))
            ft["warm"].append(finetune_arm(store, args))
        results["feature_store"] = {k: {m: statistics.median(d[m] for d in v) for m in v[0]} for k, v in ft.items()}

    _report(results, args, feat_s)
    return results


def _report(r: dict[str, Any], args: argparse.Namespace, feat_s: float) -> None:
    d = r["dataset"]
    print(f"\n== data_costs (image {args.image_size}x{args.image_size}, repeats {args.repeats}, medians) ==")
    print(f"digits dataset bytes: as fed (float32) {d['raw']:,} | float32+zstd {d['float32_zstd']:,} "
          f"({d['raw'] / d['float32_zstd']:.2f}x) | uint8+zstd {d['uint8_zstd']:,} ({d['raw'] / d['uint8_zstd']:.2f}x, "
          f"{100 * (1 - d['uint8_zstd'] / d['raw']):.1f}% smaller; target >= 70%)")
    f = r["features"]
    base = f["float32_raw"]
    print(f"backbone features (ResNet-18, 512-d, extracted in {feat_s:.1f} s):")
    for name, v in f.items():
        print(f"  {name:13s} stored {v['stored']:>10,} bytes  {base['stored'] / v['stored']:.2f}x smaller than fp32 raw  "
              f"head val acc {v['acc']:.4f} ({100 * (v['acc'] - base['acc']):+.2f} pt)")
    s = r["samples_per_s"]
    print(f"training samples/s: memory {s['memory']:.1f} | local stream {s['local_stream']:.1f} "
          f"({s['local_stream'] / s['memory']:.2f}x) | moto S3 stream {s['s3_stream']:.1f} ({s['s3_stream'] / s['memory']:.2f}x); target >= 0.9x")
    c, w = r["feature_store"]["cold"], r["feature_store"]["warm"]
    print(f"feature store fine-tune ({args.ft_epochs} epochs): cold {c['seconds']:.1f} s (acc {c['acc']:.3f}, "
          f"{c['misses']:.0f} backbone samples) | warm {w['seconds']:.1f} s (acc {w['acc']:.3f}, {w['misses']:.0f} "
          f"backbone samples) | warm/cold {100 * w['seconds'] / c['seconds']:.1f}%; target <= 50%")


if __name__ == "__main__":
    main()
