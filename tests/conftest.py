"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.clean_tree import pytest_sessionfinish, pytest_sessionstart  # noqa: F401 - hooks: tree stays clean

# Two cores: keep torch from oversubscribing when pytest and a subprocess both run.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


@pytest.fixture
def image_folder(tmp_path_factory):
    """A tiny ``root/<class>/<image>.png`` tree of real digits images (3 classes x 12 images)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images")
    digits = load_digits()
    for cls in (0, 1, 2):
        (root / f"class_{cls}").mkdir()
        imgs = digits.images[digits.target == cls][:12]
        for i, img in enumerate(imgs):
            Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((16, 16)).save(root / f"class_{cls}" / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 with a bucket ``test-bucket``.

    Yields a dict: ``endpoint`` (URL), ``storage_options`` (for fsspec/s3fs) and ``bucket`` (``s3://test-bucket``).
    """
    pytest.importorskip("s3fs", reason="needs s3fs: uv sync (dev group)")
    pytest.importorskip("moto.server", reason="needs moto[server]: uv sync (dev group)")
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="test-bucket")
    try:
        yield {"endpoint": endpoint, "storage_options": options, "bucket": "s3://test-bucket"}
    finally:
        server.stop()


@pytest.fixture(scope="session")
def digits_optimized(tmp_path_factory):
    """Digits at 8x8 written by ``optimize_datamodule`` to a local folder; yields ``(uri, manifest)``."""
    from mlcost_pl.data.digits import DigitsDataModule
    from mlcost_pl.data.optimize import optimize_datamodule

    out = tmp_path_factory.mktemp("optimized") / "digits"
    manifest = optimize_datamodule(DigitsDataModule(image_size=8, batch_size=32), str(out), chunk_bytes="16KB")
    return str(out), manifest
