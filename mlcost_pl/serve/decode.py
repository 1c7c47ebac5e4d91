"""Request decoding and validation: JSON or ``.npy`` bodies to a float32 batch, every bad input a :class:`BadInput`
naming what is wrong. Pure (numpy only)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlcost_pl.errors import UserInputError

JSON_TYPES = ("application/json",)
NPY_TYPES = ("application/octet-stream", "application/x-npy")


class BadInput(UserInputError):
    """A request the server refuses, with the HTTP status to answer (4xx)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def to_batch(arr: np.ndarray, sample_shape: Sequence[int], max_samples: int) -> tuple[np.ndarray, bool]:
    """``(batch, single)``: ``arr`` as a float32 ``(n, *sample_shape)`` batch, and whether it was one sample.

    A leading 1 in ``sample_shape`` (one channel) may be left out: ``(8, 8)`` is a sample of ``(1, 8, 8)``.

    Raises:
        BadInput: wrong dtype (422), wrong shape (422), NaN/inf (422), too many samples (413).
    """
    sample = tuple(int(d) for d in sample_shape)
    if arr.dtype.kind not in "fiub" or arr.dtype.kind == "b":
        raise BadInput(f"inputs: expected numbers (a float or integer array), got dtype {arr.dtype}")
    short = sample[1:] if sample and sample[0] == 1 else None
    if arr.shape == sample or (short is not None and arr.shape == short):
        batch, single = arr.reshape((1, *sample)), True
    elif arr.ndim == len(sample) + 1 and arr.shape[1:] == sample or (
            short is not None and arr.ndim == len(sample) and arr.shape[1:] == short):
        batch, single = arr.reshape((arr.shape[0], *sample)), False
    else:
        raise BadInput(f"inputs: expected one sample of shape {_shape(sample)} or a list of them "
                       f"{_shape(('N', *sample))}, got shape {_shape(arr.shape)}")
    if len(batch) == 0:
        raise BadInput("inputs: the list of samples is empty")
    if len(batch) > max_samples:
        raise BadInput(f"inputs: {len(batch)} samples in one request, more than serve.max_request_samples="
                       f"{max_samples}", status=413)
    batch = batch.astype(np.float32, copy=False)
    if not np.isfinite(batch).all():
        bad = int(np.argwhere(~np.isfinite(batch).reshape(len(batch), -1).all(axis=1))[0][0])
        raise BadInput(f"inputs: sample {bad} contains NaN or inf")
    return np.ascontiguousarray(batch), single


def decode_json(body: bytes) -> np.ndarray:
    """The ``inputs`` field of a JSON body as an array."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInput(f"malformed JSON body: {err}", status=400) from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise BadInput('JSON body: expected an object {"inputs": <nested list of numbers>}, '
                       f"got {type(data).__name__}{' without inputs' if isinstance(data, dict) else ''}")
    inputs: Any = data["inputs"]
    if not isinstance(inputs, list):
        raise BadInput(f"inputs: expected a nested list of numbers, got {type(inputs).__name__}")
    try:
        arr = np.asarray(inputs)
    except ValueError:
        raise BadInput("inputs: ragged nested list (the samples' rows have different lengths)") from None
    if arr.dtype == object:
        raise BadInput("inputs: ragged nested list (the samples' rows have different lengths)")
    if arr.dtype.kind in "USb":
        raise BadInput(f"inputs: expected numbers, got {'booleans' if arr.dtype.kind == 'b' else 'strings'}")
    return arr


def decode_npy(body: bytes) -> np.ndarray:
    """A ``.npy`` body as an array (``allow_pickle=False``: object arrays are refused, never unpickled)."""
    if not body.startswith(b"\x93NUMPY"):
        raise BadInput("npy body: not a valid .npy file (it does not start with the NPY magic; write it with np.save)",
                       status=400)
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise BadInput("npy body: object arrays are not accepted (they would need unpickling)") from None
        raise BadInput(f"npy body: not a valid .npy file ({err})", status=400) from None
    except (OSError, EOFError) as err:
        raise BadInput(f"npy body: not a valid .npy file ({err})", status=400) from None


def decode_body(body: bytes, content_type: str, sample_shape: Sequence[int], max_samples: int) -> tuple[np.ndarray, bool]:
    """Decode a request body by its content type; see :func:`to_batch` for the result.

    Example:
        >>> batch, single = decode_body(b'{"inputs": [[1, 2], [3, 4]]}', "application/json", (2, 2), 8)
        >>> batch.shape, batch.dtype, single
        ((1, 2, 2), dtype('float32'), True)
    """
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        arr = decode_json(body)
    elif kind in NPY_TYPES:
        arr = decode_npy(body)
    else:
        raise BadInput(f"Content-Type {kind!r} is not supported: send application/json or application/octet-stream "
                       "(a .npy file)", status=415)
    return to_batch(arr, sample_shape, max_samples)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stability, returned as float32."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def format_outputs(logits: np.ndarray, single: bool, top_k: int, labels: Sequence[str] | None) -> dict[str, Any]:
    """The response body: ``logits``, ``probabilities`` and the top-k ``classes`` (index, label, probability);
    one sample in, one sample out (no batch dimension)."""
    probs = softmax(logits)
    k = max(1, min(int(top_k), logits.shape[-1]))
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    classes = [[{"index": int(i), "label": labels[i] if labels and i < len(labels) else str(int(i)),
                 "probability": float(p[i])} for i in row] for row, p in zip(top, probs)]
    out = {"logits": logits.tolist(), "probabilities": probs.tolist(), "classes": classes}
    return {key: value[0] for key, value in out.items()} if single else out
