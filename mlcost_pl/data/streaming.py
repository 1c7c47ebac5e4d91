"""StreamingDataModule: train from an optimized dataset (local path or s3://) with litdata's streaming stack.

Each split is a litdata ``StreamingDataset`` read through a ``StreamingDataLoader``; remote chunks are cached locally
under ``cache_dir`` within ``max_cache_size`` (litdata evicts chunks already read beyond it). The loader is stateful:
Lightning stores its ``state_dict`` in every checkpoint, and ``PreemptionHandler`` lets it resume mid-epoch at the
exact sample.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from mlcost_pl.data import encodings
from mlcost_pl.data.digits import check_num_classes
from mlcost_pl.data.manifest import MANIFEST_NAME, SPLITS, DatasetInvalid, Manifest
from mlcost_pl.data.remote import AllowHttpWorkerInit, apply_allow_http, boto_options, fsspec_options, is_remote


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def read_manifest(uri: str, fs_options: dict[str, Any] | None = None, verify_chunks: bool = True) -> Manifest:
    """Read, version-check and (``verify_chunks``) check an optimized dataset's manifest against its chunks.

    Raises:
        DatasetInvalid: no manifest, an incompatible version, chunks that do not match (one line each).
        ValueError: the URI cannot be reached.
    """
    import json

    from mlcost_pl.utils.fs import get_fs

    fs, base = get_fs(uri, **(fs_options or {}))
    base = base.rstrip("/")
    try:
        text = fs.cat_file(f"{base}/{MANIFEST_NAME}")
    except FileNotFoundError as err:
        raise DatasetInvalid(
            f"data.uri={uri}: no {MANIFEST_NAME}: not an optimized dataset, or its optimize step did not finish "
            "(run `python -m recipes.data optimize data=<cfg> out=<uri>`)"
        ) from err
    except Exception as err:  # noqa: BLE001 - network/permission failures become one line naming the URI
        raise ValueError(f"data.uri={uri} is unreachable: {_one_line(err)}") from err
    manifest = Manifest.from_json(text, uri)
    if verify_chunks:
        for split in manifest.splits:
            folder = f"{base}/{split}"
            try:
                fs.invalidate_cache(folder)
            except Exception:  # noqa: BLE001 - not every filesystem caches listings
                pass
            try:
                index = json.loads(fs.cat_file(f"{folder}/index.json"))
                sizes = {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in fs.ls(folder, detail=True)}
            except FileNotFoundError as err:
                raise DatasetInvalid(f"data.uri={uri}: split {split!r} has no index.json; re-run the optimize step") from err
            data_format = index.get("config", {}).get("data_format", [])
            if any("pickle" in str(f) for f in data_format):
                raise DatasetInvalid(f"data.uri={uri}: split {split!r} stores pickled samples; refusing to unpickle them")
            manifest.check_index(split, index, uri)
            manifest.check_sizes(split, sizes, uri)
    return manifest


class DecodeSample:
    """litdata ``transform``: a stored sample dict -> ``(x float32 tensor, label)`` using the manifest's encoding."""

    def __init__(self, spec: dict[str, Any], train: bool) -> None:
        self.spec, self.train = spec, train
        self._transform: Any = None

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int]:
        if self.spec["dtype"] == "encoded":
            from PIL import Image

            if self._transform is None:
                from mlcost_pl.data.imagefolder import image_transform

                self._transform = image_transform(train=self.train, **self.spec.get("transform", {}))
            img = Image.open(io.BytesIO(bytes(item["x"])))
            img.load()
            return self._transform(img), int(item["y"])
        x = encodings.decode(np.asarray(item["x"]), self.spec, item.get("s"))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(item["y"])


class StreamingDataModule(LightningDataModule):
    """Stream an optimized dataset (written by ``python -m recipes.data optimize``) with litdata.

    Args:
        uri: local path or ``s3://...`` URL of the optimized dataset (the folder holding ``manifest.json``).
        batch_size: per-device batch size.
        num_workers: DataLoader workers (a resumed run must use the same number).
        shuffle: shuffle the training split (litdata's chunk-then-sample shuffle, seeded).
        seed: shuffle seed.
        cache_dir: local cache of remote chunks (default ``~/.cache/mlcost_pl/litdata/<hash of uri>``).
        max_cache_size: cache budget, e.g. ``"10GB"``; litdata evicts chunks already read beyond it.
        endpoint_url: S3-compatible endpoint (MinIO, moto, R2 ...).
        storage_options: boto3 client kwargs (``aws_access_key_id``, ``region_name`` ...).
        allow_http: allow a plain-HTTP ``endpoint_url`` (litdata's object-store client refuses one otherwise).
        verify_chunks: check at start-up that every chunk listed in the manifest exists with its size.
        num_classes: optional check against the manifest.

    Raises:
        ValueError: a bad argument, an unreachable URI, a dataset without a manifest, written by an incompatible
            version, or whose chunks do not match its manifest (one line each, naming the URI).

    Logged (once, when the train loader is built): ``data/raw_mb``, ``data/stored_mb``, ``data/compression_ratio``.

    Example:
        >>> dm = StreamingDataModule("s3://bucket/digits-opt", endpoint_url="http://127.0.0.1:9000", allow_http=True)  # doctest: +SKIP
        >>> L.Trainer().fit(model, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        uri: str,
        batch_size: int = 64,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 42,
        cache_dir: str | None = None,
        max_cache_size: str | int = "10GB",
        endpoint_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        allow_http: bool = False,
        verify_chunks: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if not uri or not str(uri).strip() or str(uri) == "???":
            raise ValueError("data.uri: give the local path or s3:// URL of an optimized dataset")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.uri = str(uri).rstrip("/")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.max_cache_size = max_cache_size
        self.endpoint_url, self.allow_http = endpoint_url, bool(allow_http)
        apply_allow_http(self.uri, endpoint_url, self.allow_http)
        self.boto = boto_options(endpoint_url, storage_options)
        remote = is_remote(self.uri)
        if not remote and not os.path.isdir(self.uri.removeprefix("file://")):
            raise ValueError(f"data.uri={self.uri}: no such directory")
        self.manifest = read_manifest(self.uri, fsspec_options(self.boto) if remote else None, verify_chunks)
        self.num_classes = self.manifest.num_classes
        check_num_classes(num_classes, self.num_classes)
        key = hashlib.blake2b(f"{self.uri}|{self.manifest.content_hash}".encode(), digest_size=8).hexdigest()
        self.cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "mlcost_pl", "litdata", key)
        self.datasets: dict[str, Any] = {}
        self._logged = False

    @property
    def stats(self) -> dict[str, float]:
        """Raw (as the source DataModule fed it) vs stored bytes of the whole dataset."""
        m = self.manifest
        return {"data/raw_mb": m.raw_bytes / 2**20, "data/stored_mb": m.stored_bytes / 2**20,
                "data/compression_ratio": m.raw_bytes / m.stored_bytes if m.stored_bytes else 0.0}

    def summary_rows(self) -> list[tuple[str, object]]:
        s = self.stats
        return [("data stored / raw", f"{s['data/stored_mb']:.2f} MiB / {s['data/raw_mb']:.2f} MiB "
                 f"({s['data/compression_ratio']:.1f}x smaller; {encodings.describe(self.manifest.encodings['x'])})")]

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        import litdata

        os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
        spec = self.manifest.encodings["x"]
        remote = is_remote(self.uri)
        for split in SPLITS:
            if split not in self.manifest.splits:
                continue
            kwargs: dict[str, Any] = {}
            if remote:
                kwargs.update(cache_dir=os.path.join(self.cache_dir, split), max_cache_size=self.max_cache_size,
                              storage_options=self.boto)
            self.datasets[split] = litdata.StreamingDataset(
                f"{self.uri}/{split}", shuffle=self.shuffle and split == "train", seed=self.seed,
                transform=DecodeSample(spec, train=split == "train"), **kwargs)
        s = self.stats
        rank_zero_info(f"StreamingDataModule: {self.uri}: {s['data/stored_mb']:.2f} MiB stored for "
                       f"{s['data/raw_mb']:.2f} MiB as fed ({s['data/compression_ratio']:.1f}x smaller)")

    def _loader(self, split: str) -> Any:
        import litdata

        if split not in self.datasets:
            self.setup()
        init = AllowHttpWorkerInit(self.uri, self.endpoint_url, self.allow_http) if self.num_workers else None
        return litdata.StreamingDataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers,
                                           worker_init_fn=init)

    @override
    def train_dataloader(self) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and not self._logged:
            self._logged = True
            for logger in trainer.loggers:
                logger.log_metrics(self.stats, step=0)
        return self._loader("train")

    @override
    def val_dataloader(self) -> Any:
        return self._loader("val")

    @override
    def test_dataloader(self) -> Any:
        return self._loader("test")

    @override
    def predict_dataloader(self) -> Any:
        return self._loader("test")
