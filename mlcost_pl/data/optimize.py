"""Optimize once, stream everywhere: turn a DataModule's splits into litdata's compressed chunks plus a manifest.

``optimize_datamodule(dm, out)`` reads each split of ``dm`` (train, val, test) once, encodes it storage-aware (see
:mod:`mlcost_pl.data.encodings`), writes it with ``litdata.optimize`` (zstd, chunk size, parallel workers) to
``<out>/<split>/`` and finally ``<out>/manifest.json`` (see :mod:`mlcost_pl.data.manifest`). On a local path the
whole dataset is staged next to ``out`` and renamed into place, so ``out`` is either absent, the old dataset or the
complete new one; on an object store the manifest is the commit marker and whatever was uploaded before a failure is
deleted. ``StreamingDataModule`` reads the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcost_pl.data import encodings
from mlcost_pl.data.manifest import MANIFEST_NAME, SPLITS, Manifest, SplitInfo
from mlcost_pl.data.remote import apply_allow_http, boto_options, fsspec_options, is_remote
from mlcost_pl.utils.fs import atomic_write_local, replace_dir

COMPRESSIONS = (None, "zstd")


@dataclass
class _Split:
    """One split, encoded in memory: ``x`` (stored arrays or encoded image bytes), labels, int8 scales."""

    x: np.ndarray | list[bytes]
    y: np.ndarray
    scales: np.ndarray | None
    raw_bytes: int


class _Sample:
    """``litdata.optimize``'s ``fn``: index -> sample dict (picklable; no torch/Lightning import in workers)."""

    def __init__(self, split: _Split, http: tuple[str, str | None, bool]) -> None:
        self.split, self.http = split, http

    def __call__(self, i: int) -> dict[str, Any]:
        apply_allow_http(*self.http)  # spawned workers start without it; idempotent
        sample: dict[str, Any] = {"x": self.split.x[i], "y": int(self.split.y[i])}
        if self.split.scales is not None:
            sample["s"] = float(self.split.scales[i])
        return sample


def _check_compression(compression: str | None) -> str | None:
    if compression in ("", "none", "None"):
        compression = None
    base = None if compression is None else str(compression).split(":", 1)[0]
    if base not in COMPRESSIONS:
        raise ValueError(f"data.compression={compression!r}: choose zstd, zstd:<level> or none")
    return compression


def _read_split(ds: Any) -> tuple[np.ndarray | list[bytes], np.ndarray, int, dict[str, Any] | None]:
    """``(x, y, raw_bytes, encoded_spec)`` of a map-style dataset; ``encoded_spec`` when images stay encoded."""
    n = len(ds)
    if hasattr(ds, "raw") and n:  # ImageFolder-style: keep the image file bytes as they are
        raws = [ds.raw(i) for i in range(n)]
        first, _ = ds[0]
        fmt = encodings.image_format(raws[0][0])
        spec = {"kind": "image", "dtype": "encoded", "format": fmt or "bytes", "shape": list(first.shape),
                "source_dtype": str(first.dtype).replace("torch.", ""), "transform": dict(getattr(ds, "transform_args", {}))}
        raw = n * (first.numel() * first.element_size() + 8)
        return [r[0] for r in raws], np.asarray([r[1] for r in raws], dtype=np.int64), raw, spec
    tensors = getattr(ds, "tensors", None)
    if tensors is not None and len(tensors) == 2:
        x, y = tensors[0].detach().cpu().numpy(), tensors[1].detach().cpu().numpy()
    else:
        items = [ds[i] for i in range(n)]
        x = np.stack([np.asarray(it[0]) for it in items]) if items else np.zeros((0,), np.float32)
        y = np.asarray([int(it[1]) for it in items], dtype=np.int64)
    raw = int(x.nbytes + y.astype(np.int64).nbytes)
    return x, y.astype(np.int64), raw, None


def optimize_datamodule(
    datamodule: Any,
    out: str,
    compression: str | None = "zstd",
    chunk_bytes: str | int = "4MB",
    num_workers: int = 1,
    image_dtype: str = "uint8",
    feature_dtype: str | None = None,
    endpoint_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
    allow_http: bool = False,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
) -> Manifest:
    """Write ``datamodule``'s train/val/test splits to ``out`` as a compressed litdata dataset; return its manifest.

    Args:
        datamodule: any DataModule whose ``<split>_dataloader().dataset`` is map-style with ``(x, label)`` items.
        out: local path or ``s3://...`` URL of the dataset folder.
        compression: ``"zstd"``, ``"zstd:<level>"`` or ``None``.
        chunk_bytes: target chunk size (``"4MB"`` or bytes).
        num_workers: ``litdata.optimize`` worker processes.
        image_dtype: how float image tensors are stored: ``"uint8"`` (affine over the data's range, 4x smaller,
            lossy within half a quantization step), ``"float16"`` or ``"float32"`` (as fed).
        feature_dtype: how 1-D feature vectors are stored: ``"float32"`` (default), ``"float16"`` or ``"int8"``.
        endpoint_url: S3-compatible endpoint (MinIO, moto, R2 ...).
        storage_options: boto3 client kwargs (``aws_access_key_id``, ``region_name`` ...).
        allow_http: allow a plain-HTTP ``endpoint_url`` (see :mod:`mlcost_pl.data.remote`).
        overwrite: replace an existing optimized dataset at ``out``.
        source: the config that built ``datamodule`` (recorded in the manifest).

    Raises:
        ValueError: a bad argument; ``out`` unreachable, not writable or already holding a dataset.
    """
    compression = _check_compression(compression)
    encodings.check_dtype("data.image_dtype", image_dtype, encodings.IMAGE_DTYPES)
    feature_dtype = encodings.check_dtype("data.feature_dtype", feature_dtype, encodings.FEATURE_DTYPES) or "float32"
    if int(num_workers) < 1:
        raise ValueError(f"data.num_workers must be >= 1 for optimize, got {num_workers}")
    if not str(out).strip():
        raise ValueError("out: give a local path or an s3:// URL for the optimized dataset")
    apply_allow_http(str(out), endpoint_url, allow_http)
    boto = boto_options(endpoint_url, storage_options)

    from mlcost_pl.checkpoint.storage import CheckpointDirError, CheckpointStorage

    target = CheckpointStorage(str(out), fsspec_options(boto) if is_remote(out) else None)
    try:
        target.check_writable()
    except CheckpointDirError as err:
        raise ValueError(f"out={out} is not writable: {str(err).split(': ', 1)[-1]}") from err
    if target.exists(MANIFEST_NAME):
        if not overwrite:
            raise ValueError(f"out={out} already holds an optimized dataset: pass overwrite=true or choose another out")
        if not target.is_local:  # un-commit first: readers never see the old manifest over new chunks
            target.remove(MANIFEST_NAME)
            for s in SPLITS:
                target.remove_tree(s)

    # 1. read and encode every split in memory (one pass over the DataModule)
    datamodule.setup("fit")
    datamodule.setup("test")
    raw_splits = {s: _read_split(getattr(datamodule, f"{s}_dataloader")().dataset) for s in SPLITS}
    x0 = raw_splits["train"][0]
    spec = raw_splits["train"][3]
    if spec is None:
        assert isinstance(x0, np.ndarray)
        kind = "image" if x0.ndim >= 3 else "feature"
        together = np.concatenate([np.asarray(raw_splits[s][0]).reshape((-1,) + x0.shape[1:]) for s in SPLITS])
        spec = encodings.plan_encoding(together, image_dtype if kind == "image" else feature_dtype, kind)
        spec["max_abs_error"] = encodings.max_abs_error(together, spec)
    splits: dict[str, _Split] = {}
    digest = hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=16)
    for s in SPLITS:
        x, y, raw, _ = raw_splits[s]
        if spec["dtype"] == "encoded":
            stored, scales = x, None
            for b in x:
                digest.update(len(b).to_bytes(8, "little") + b)
        else:
            stored, scales = encodings.encode(np.asarray(x), spec)
            digest.update(np.ascontiguousarray(stored).tobytes())
            if scales is not None:
                digest.update(scales.tobytes())
        digest.update(y.tobytes())
        splits[s] = _Split(stored, y, scales, raw)

    if spec["dtype"] == "encoded":  # JPEG/PNG bytes are compressed already: zstd over them only costs CPU
        compression = None
    # 2. write with litdata: staged next to a local out, straight to an object store
    staging = target.url if target.is_local is False else f"{os.path.dirname(target.root)}/.{os.path.basename(target.root)}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _write_splits(splits, staging, compression, chunk_bytes, int(num_workers), boto, (str(out), endpoint_url, allow_http))
        manifest = _manifest(splits, staging, target, spec, compression, digest.hexdigest(), datamodule, source, boto)
        if target.is_local:
            _replace_local(staging, target.root, manifest)
        else:
            target.write_atomic(MANIFEST_NAME, manifest.to_json().encode())  # the commit marker, written last
    except BaseException:
        if target.is_local:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            for s in SPLITS:
                target.remove_tree(s)
        raise
    return manifest


def _write_splits(splits: dict[str, _Split], root: str, compression: str | None, chunk_bytes: str | int, num_workers: int,
                  boto: dict[str, Any], http: tuple[str, str | None, bool]) -> None:
    import litdata

    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI call from a training job
    # litdata stages chunks for a remote output in one fixed folder (<tmp>/chunks) and deletes it afterwards, so two
    # optimize calls at once (two jobs on a host, parallel tests) would delete each other's chunks: give each its own.
    previous = os.environ.get("DATA_OPTIMIZER_CACHE_FOLDER")
    with tempfile.TemporaryDirectory(prefix="mlcost-optimize-") as staging_cache:
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = staging_cache
        try:
            _optimize_splits(splits, root, compression, chunk_bytes, num_workers, boto, http)
        finally:
            if previous is None:
                os.environ.pop("DATA_OPTIMIZER_CACHE_FOLDER", None)
            else:
                os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = previous


def _optimize_splits(splits: dict[str, _Split], root: str, compression: str | None, chunk_bytes: str | int,
                     num_workers: int, boto: dict[str, Any], http: tuple[str, str | None, bool]) -> None:
    import litdata

    for name, split in splits.items():
        if not len(split.y):
            raise ValueError(f"data: split {name!r} is empty; nothing to optimize")
        litdata.optimize(
            fn=_Sample(split, http),
            inputs=list(range(len(split.y))),
            output_dir=f"{root.rstrip('/')}/{name}",
            chunk_bytes=chunk_bytes,
            compression=compression,
            num_workers=min(num_workers, len(split.y)),
            storage_options=boto,
            reorder_files=False,
            keep_data_ordered=True,
            start_method="fork" if sys.platform.startswith("linux") else None,
            verbose=False,
        )


def _manifest(splits: dict[str, _Split], root: str, target: Any, spec: dict[str, Any], compression: str | None,
              content_hash: str, datamodule: Any, source: dict[str, Any] | None, boto: dict[str, Any]) -> Manifest:
    import litdata

    from mlcost_pl.utils.fs import get_fs

    fs, base = get_fs(root, **(fsspec_options(boto) if is_remote(root) else {}))
    infos: dict[str, SplitInfo] = {}
    for name, split in splits.items():
        folder = f"{base.rstrip('/')}/{name}"
        try:
            fs.invalidate_cache(folder)
        except Exception:  # noqa: BLE001 - not every filesystem caches listings
            pass
        sizes = {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in fs.ls(folder, detail=True)}
        chunks = {k: v for k, v in sizes.items() if k != "index.json"}
        infos[name] = SplitInfo(count=len(split.y), raw_bytes=split.raw_bytes, stored_bytes=sum(sizes.values()), chunks=chunks)
    num_classes = int(getattr(datamodule, "num_classes", 0) or int(max(int(s.y.max()) for s in splits.values()) + 1))
    return Manifest(splits=infos, encodings={"x": spec}, num_classes=num_classes, content_hash=content_hash,
                    compression=compression, source=dict(source or {}), litdata_version=litdata.__version__)


def _replace_local(staging: str, final: str, manifest: Manifest) -> None:
    """Write the manifest into ``staging`` and rename it to ``final`` (the old dataset, if any, is dropped after)."""
    atomic_write_local(os.path.join(staging, MANIFEST_NAME), manifest.to_json())
    replace_dir(staging, final)
