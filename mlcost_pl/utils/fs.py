"""Small fsspec helpers shared by data, models, checkpoints and exports."""

from __future__ import annotations

import io
from typing import Any

import fsspec
from fsspec.core import url_to_fs


def get_fs(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or any fsspec URL.

    Raises:
        ImportError: the URL's protocol needs a package that is not installed (the message names it).
    """
    try:
        return url_to_fs(str(url), **storage_options)
    except ImportError as err:
        proto = str(url).split("://", 1)[0]
        extra = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, proto)
        raise ImportError(f"{url}: the {proto}:// protocol needs `{extra}`: pip install {extra}") from err


def load_torch(url: str, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load`` from a local path or fsspec URL; a missing file raises ``FileNotFoundError`` naming it."""
    import torch

    fs, path = get_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such file")
    with fs.open(path, "rb") as f:
        data = f.read()
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
