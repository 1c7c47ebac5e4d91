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


def write_atomic(url: str, data: bytes, **storage_options: Any) -> str:
    """Write ``data`` to a local path or fsspec URL so readers see the old content or the new, never half of it.

    A local file is written to a temporary sibling, fsynced and renamed over the target; an object store's single PUT
    is already all-or-nothing. Returns the path/URL written.
    """
    import os
    import uuid

    from fsspec.implementations.local import LocalFileSystem

    fs, path = get_fs(url, **storage_options)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return fs.unstrip_protocol(path)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
