"""Optimize once, stream everywhere: local and moto-S3 round trips, encoded images, the recipe, and bad input."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch

from mlcost_pl.data.digits import DigitsDataModule
from mlcost_pl.data.optimize import optimize_datamodule
from mlcost_pl.data.streaming import StreamingDataModule

S3_CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _all(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_local_stream_matches_the_datamodule_and_is_70_percent_smaller(digits_optimized):
    uri, manifest = digits_optimized
    assert [s.count for s in manifest.splits.values()] == [1257, 270, 270] and manifest.num_classes == 10
    assert manifest.saving >= 0.70 and manifest.encodings["x"]["dtype"] == "uint8"
    dm = DigitsDataModule(image_size=8)
    dm.setup()
    stream = StreamingDataModule(uri, batch_size=64, num_classes=10)
    x, y = _all(stream.val_dataloader())
    assert torch.equal(y, dm.data_val.tensors[1])  # same samples, same order
    assert (x - dm.data_val.tensors[0]).abs().max() <= manifest.encodings["x"]["max_abs_error"] + 1e-6
    assert stream.stats["data/compression_ratio"] > 3 and "uint8" in stream.summary_rows()[0][1]


def test_bad_datasets_are_one_line_each(tmp_path, digits_optimized):
    uri, _ = digits_optimized
    with pytest.raises(ValueError, match="no such directory"):
        StreamingDataModule(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no manifest.json: not an optimized dataset, or its optimize step did not finish"):
        StreamingDataModule(str(tmp_path / "empty"))
    old = shutil.copytree(uri, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 99
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format version 99"):
        StreamingDataModule(str(old))
    bad = shutil.copytree(uri, tmp_path / "bad")
    chunk = sorted((bad / "val").glob("chunk-*"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-10])  # a truncated chunk
    with pytest.raises(ValueError, match=r"chunk val/chunk-.* has \d+ bytes, the manifest says"):
        StreamingDataModule(str(bad))
    with pytest.raises(ValueError, match="already holds an optimized dataset: pass overwrite=true"):
        optimize_datamodule(DigitsDataModule(image_size=8), uri)
    with pytest.raises(ValueError, match="data.compression='lz4'"):
        optimize_datamodule(DigitsDataModule(image_size=8), str(tmp_path / "x"), compression="lz4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        optimize_datamodule(DigitsDataModule(image_size=8), str(tmp_path / "file" / "out"))
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written


def test_s3_round_trip_on_moto_needs_allow_http(tmp_path, s3_server):
    endpoint, out = s3_server["endpoint"], f"{s3_server['bucket']}/digits"
    with pytest.raises(ValueError, match=r"plain HTTP.*allow_http=true"):
        optimize_datamodule(DigitsDataModule(image_size=8), out, endpoint_url=endpoint, storage_options=S3_CREDS)
    manifest = optimize_datamodule(DigitsDataModule(image_size=8), out, endpoint_url=endpoint, storage_options=S3_CREDS,
                                   allow_http=True, chunk_bytes="16KB")
    stream = StreamingDataModule(out, batch_size=128, cache_dir=str(tmp_path / "cache"), max_cache_size="1GB",
                                 endpoint_url=endpoint, storage_options=S3_CREDS, allow_http=True)
    x, y = _all(stream.train_dataloader())
    assert len(y) == manifest.splits["train"].count and x.shape[1:] == (1, 8, 8)
    assert list((tmp_path / "cache").rglob("chunk-*"))  # read through the local cache
    with pytest.raises(ValueError, match="is not writable"):
        optimize_datamodule(DigitsDataModule(image_size=8), "s3://no-such-bucket/x", endpoint_url=endpoint,
                            storage_options=S3_CREDS, allow_http=True)


@pytest.mark.slow  # ~10 s of bounded connection retries
def test_unreachable_endpoint_is_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ValueError, match=r"data.uri=s3://test-bucket/digits is unreachable: EndpointConnectionError"):
        StreamingDataModule("s3://test-bucket/digits", endpoint_url=dead, storage_options=S3_CREDS, allow_http=True)


def test_encoded_images_stay_encoded_and_decode_like_the_source(tmp_path, image_folder):
    from mlcost_pl.data.imagefolder import ImageFolderDataModule

    src = ImageFolderDataModule(str(image_folder), image_size=16, channels=1, batch_size=8)
    manifest = optimize_datamodule(src, str(tmp_path / "imgs"))
    spec = manifest.encodings["x"]
    assert spec["dtype"] == "encoded" and spec["format"] == "png"
    x, y = _all(StreamingDataModule(str(tmp_path / "imgs"), batch_size=8).val_dataloader())
    x0, y0 = _all(src.val_dataloader())
    assert torch.equal(y, y0) and torch.equal(x, x0)


def test_recipe_optimize_writes_and_reports(tmp_path):
    from recipes.data import optimize
    from tests.helpers.cfg import compose_cfg

    out = tmp_path / "opt"
    cfg = compose_cfg("data", ["data=digits", "data.image_size=8", f"out={out}", "data.compression=zstd",
                               "data.chunk_bytes=64KB"], tmp_path)
    figures = optimize(cfg)
    assert figures["data/saving"] >= 0.7 and (out / "manifest.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["data"]["_target_"] == "mlcost_pl.data.DigitsDataModule"
    assert "compression" not in manifest["source"]["data"]  # optimize options are not DataModule arguments
