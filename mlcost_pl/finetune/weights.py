"""Save a module's weights to a local path or fsspec URL without ever leaving a torn file behind."""

from __future__ import annotations

import io
import os
import tempfile

import torch
from torch import nn

from mlcost_pl.utils.fs import get_fs


def save_weights(module: nn.Module, url: str) -> str:
    """Write ``module.state_dict()`` to ``url`` (a path or any fsspec URL) and return ``url``.

    A local file is written to a temporary name in the same folder and renamed into place; a remote object is
    uploaded in one ``put`` (object stores never expose a partial object). The file loads with
    :meth:`mlcost_pl.models.ImageClassifier.load_weights` (``model.weights_path=``) as backbone-only weights.

    Raises:
        ValueError: ``url`` is empty.

    Example:
        >>> save_weights(nn.Linear(2, 2), "memory://doc/linear.pt")
        'memory://doc/linear.pt'
    """
    if not url:
        raise ValueError("finetune.backbone_path must be a path or fsspec URL, got an empty value")
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    fs, path = get_fs(url)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(buf.getvalue())
    return url
