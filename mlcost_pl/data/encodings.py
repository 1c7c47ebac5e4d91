"""Storage-aware encodings: store each field in the type that costs least, and say what was lost.

Lossless compression alone saves little on photos (raw uint8 pixels shrink ~1.5x, dense float32 ~1.1x, JPEG bytes not
at all); the large savings come from storing the right type:

- ``encoded``: images that already are JPEG/PNG/WebP bytes are kept as they are (decoded on read);
- ``uint8``: float pixel tensors (what a normalizing transform produces) are mapped affinely onto 0..255 with the
  dataset's range, 4x smaller before compression (lossy: the maximum absolute error is recorded);
- ``float16`` / ``int8`` for features: 2x / 4x smaller (lossy; int8 is symmetric per sample with a float32 scale);
- ``float32``: as fed, lossless.

Pure NumPy: no torch, no Lightning. Each encoding is described by a small JSON-able ``spec`` dict stored in the
dataset's manifest, so a reader can decode without any other knowledge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE_DTYPES = ("uint8", "float16", "float32")
FEATURE_DTYPES = ("float32", "float16", "int8")
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"RIFF": "webp", b"GIF8": "gif"}


def image_format(data: bytes) -> str | None:
    """The container format of encoded image bytes (``"jpeg"``, ``"png"``, ...), or ``None``."""
    for magic, name in _MAGIC.items():
        if bytes(data[: len(magic)]) == magic:
            return name
    return None


def check_dtype(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    """Validate a user-facing dtype argument; returns it (``None`` stays ``None``)."""
    if value is not None and str(value) not in allowed:
        raise ValueError(f"{name}={value!r}: choose one of {list(allowed)}")
    return None if value is None else str(value)


def plan_encoding(x: np.ndarray, dtype: str, kind: str) -> dict[str, Any]:
    """The encoding spec for a whole split ``x`` (samples along axis 0) stored as ``dtype``.

    ``kind`` is ``"image"`` or ``"feature"`` (informational, and it picks the allowed dtypes).
    """
    allowed = IMAGE_DTYPES if kind == "image" else FEATURE_DTYPES
    check_dtype("data.image_dtype" if kind == "image" else "data.feature_dtype", dtype, allowed)
    spec: dict[str, Any] = {"kind": kind, "dtype": dtype, "source_dtype": str(x.dtype), "shape": list(x.shape[1:])}
    if dtype == "uint8" and x.dtype != np.uint8:
        lo = float(x.min()) if x.size else 0.0
        hi = float(x.max()) if x.size else 1.0
        spec.update(lo=lo, hi=hi if hi > lo else lo + 1.0)
    return spec


def encode(x: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode a batch ``x`` with ``spec``; returns ``(stored, scales)`` (``scales`` only for int8)."""
    dtype = spec["dtype"]
    if dtype == "uint8" and x.dtype != np.uint8:
        lo, hi = spec["lo"], spec["hi"]
        q = np.rint((x.astype(np.float64) - lo) * (255.0 / (hi - lo)))
        return np.clip(q, 0, 255).astype(np.uint8), None
    if dtype == "int8":
        flat = x.reshape(len(x), -1).astype(np.float32)
        scale = np.abs(flat).max(axis=1) / 127.0 if flat.size else np.zeros(len(x), np.float32)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
        return q.reshape(x.shape), scale
    return x.astype(np.dtype(dtype)), None


def decode(stored: np.ndarray, spec: dict[str, Any], scale: np.ndarray | float | None = None) -> np.ndarray:
    """Inverse of :func:`encode` for one sample or a batch (float32 out, except images kept as uint8 sources)."""
    dtype = spec["dtype"]
    if dtype == "uint8" and "lo" in spec:
        return (stored.astype(np.float32) * np.float32((spec["hi"] - spec["lo"]) / 255.0) + np.float32(spec["lo"])).astype(np.float32)
    if dtype == "int8":
        assert scale is not None, "int8 features need their scale"
        s = np.asarray(scale, dtype=np.float32)
        return stored.astype(np.float32) * (s.reshape(s.shape + (1,) * (stored.ndim - s.ndim)) if s.ndim else s)
    if stored.dtype == np.uint8 and spec.get("source_dtype") == "uint8":
        return stored
    return stored.astype(np.float32)


def max_abs_error(x: np.ndarray, spec: dict[str, Any]) -> float:
    """The largest absolute error the encoding makes on ``x`` (0.0 for lossless encodings)."""
    if not x.size:
        return 0.0
    stored, scale = encode(x, spec)
    return float(np.abs(decode(stored, spec, scale).astype(np.float64) - x.astype(np.float64)).max())


def describe(spec: dict[str, Any]) -> str:
    """One human line for the manifest and the CLI, e.g. ``image: float32 -> uint8 (affine [-0.79, 1.84])``."""
    if spec.get("dtype") == "encoded":
        return f"{spec['kind']}: kept encoded ({spec.get('format', 'bytes')})"
    text = f"{spec['kind']}: {spec['source_dtype']} -> {spec['dtype']}"
    if "lo" in spec:
        text += f" (affine [{spec['lo']:.3g}, {spec['hi']:.3g}])"
    if spec.get("max_abs_error"):
        text += f", max abs error {spec['max_abs_error']:.3g}"
    return text
