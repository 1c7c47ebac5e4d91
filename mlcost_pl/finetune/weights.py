"""Save a module's weights to a local path or fsspec URL without ever leaving a torn file behind."""

from __future__ import annotations

import io

import torch
from torch import nn

from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.fs import write_atomic


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
        raise UserInputError("finetune.backbone_path must be a path or fsspec URL, got an empty value")
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    write_atomic(url, buf.getvalue())
    return url
